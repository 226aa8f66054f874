"""ABBA paired comparison: order, ratios, and bad input."""

from __future__ import annotations

import re

import pytest

from matmul import Workload
from matmul.core.workloads import MatmulShape
from matmul.measure import interleave
from matmul.measure.candidates import prepare
from matmul.measure.interleave import calls_for, time_interleaved
from matmul.measure.paired import paired, paired_table


def test_blocks_alternate_abba(monkeypatch):
    order = []
    a = prepare("full", MatmulShape(4, 16, 16))
    b = prepare("numpy", MatmulShape(4, 16, 16))
    a.call = lambda: order.append("a")
    b.call = lambda: order.append("b")
    monkeypatch.setattr(interleave, "WARM_S", 0.0)
    time_interleaved([a, b], blocks=4, calls=1, warmup=0)
    # each block: one untimed warm-up call (the other candidate evicted our tensors), then the timed call
    assert "".join(order) == "aa bb bb aa aa bb bb aa".replace(" ", "")
    # by default a block after a pool switch (TVM to NumPy and back) first runs untimed for WARM_S
    order.clear()
    monkeypatch.setattr(interleave, "WARM_S", 0.05)  # long enough that no descheduling (the other xdist worker) eats it
    time_interleaved([a, b], blocks=4, calls=1, warmup=0)
    runs = re.findall(r"a+|b+", "".join(order))
    assert [r[0] for r in runs] == list("abbaabba".replace("bb", "b").replace("aa", "a"))
    assert all(len(r) > 2 for r in runs)  # far more than the one warm-up call: instant calls for 50 ms


def test_three_candidates_are_timed_in_mirrored_order(monkeypatch):
    monkeypatch.setattr(interleave, "WARM_S", 0.0)  # the warm-up after a pool switch: test_blocks_alternate_abba
    order = []
    cands = [prepare("numpy", MatmulShape(4, 16, 16)) for _ in range(3)]
    for name, c in zip("abc", cands):
        c.call = (lambda n: lambda: order.append(n))(name)
    times = time_interleaved(cands, blocks=4, calls=1, warmup=0)
    # one pool, so each mirrored pair starts one candidate later: every candidate gets every position
    assert "".join(order) == "aabbcc ccbbaa bbccaa aaccbb".replace(" ", "") and [len(t) for t in times] == [4, 4, 4]
    with pytest.raises(ValueError, match="no candidates"):
        time_interleaved([], blocks=2)


def test_calls_for_makes_a_block_last_long_enough():
    c = prepare("numpy", MatmulShape(4, 16, 16))  # microseconds per call
    assert calls_for(c, 5, 0.0) == 5
    assert calls_for(c, 5, 0.01) > 5


def test_paired_table_holds_block_medians_and_geomeans():
    (res,) = paired("full", "numpy", [Workload("qkv", 8)], blocks=2, calls=2)
    assert len(res.a_blocks) == len(res.b_blocks) == 2 and res.speedup == res.a_s / res.b_s
    table, geo = paired_table([res])
    assert table.loc[0, "speedup_b_over_a"] == pytest.approx(res.speedup)
    assert list(geo["kernel"]) == ["qkv", "all"] and geo["speedup_geomean"].iloc[-1] == pytest.approx(res.speedup)


@pytest.mark.parametrize("blocks", [1, 3])
def test_odd_blocks_are_refused(blocks):
    c = prepare("numpy", MatmulShape(2, 2, 2))
    with pytest.raises(ValueError, match="even number"):
        time_interleaved([c, c], blocks=blocks)


def test_bad_names_and_empty_grid():
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        paired("full", "nope", [Workload("qkv", 8)])
    with pytest.raises(ValueError, match="no workloads"):
        paired("full", "numpy", [])


def test_each_speedup_comes_with_its_interval_and_significance():
    from matmul.core.workloads import Workload
    from matmul.measure.paired import PairedResult

    w = Workload("qkv", 16)
    fast = PairedResult(w, "NN", "a", "b", (2.0, 2.1, 2.0, 1.9, 2.05, 2.0), (1.0, 1.02, 0.99, 0.98, 1.01, 1.0))
    same = PairedResult(w, "NN", "a", "b", (1.0, 1.1, 0.9, 1.05, 0.95, 1.0), (1.02, 1.08, 0.92, 1.0, 0.97, 1.01))
    table, _ = paired_table([fast, same])
    assert table.loc[0, "ci_lo"] <= table.loc[0, "speedup_b_over_a"] <= table.loc[0, "ci_hi"]
    assert table.loc[0, "ci_lo"] > 1.8 and bool(table.loc[0, "significant"])
    assert table.loc[1, "ci_lo"] <= 1.0 <= table.loc[1, "ci_hi"] and not bool(table.loc[1, "significant"])


@pytest.mark.perf
def test_before_after_times_a_change_beside_its_a_a_pair_and_writes_the_rows(tmp_path):
    """The before/after form the evidence scripts use: a slow old build, the new one, and its second build."""
    import csv
    import time

    from matmul.measure.paired import before_after, write_rows

    shape = MatmulShape(4, 16, 16)
    old, new, twin = (prepare("full", shape, fresh=True) for _ in range(3))
    fast = new.call
    old.call = lambda: (time.sleep(0.002), fast())
    row = before_after(old, new, twin, blocks=2, calls=10)  # 2 calls of a 1 us kernel: one stall read its A/A 2.9x
    assert row["old_ms"] > row["new_ms"] and row["speedup"] > 2 and row["ci_low"] <= row["speedup"] <= row["ci_high"]
    assert 0 < row["aa_ratio"] < 2 and 0 <= row["p"] <= 1
    ref = prepare("full", shape, fresh=True)
    ref_call = ref.call
    ref.call = lambda: (time.sleep(0.001), ref_call())  # a slower reference in the same rounds
    with_ref = before_after(old, new, twin, blocks=2, calls=10, reference=ref)
    assert list(with_ref)[-3:] == ["new_vs_full", "vs_full_ci_low", "vs_full_ci_high"] and with_ref["new_vs_full"] > 1
    path = tmp_path / "rows.csv"
    write_rows(path, [{"shape": str(shape), **row}])
    back = list(csv.DictReader(path.open()))
    assert len(back) == 1 and list(back[0]) == ["shape", *row] and float(back[0]["speedup"]) == row["speedup"]
