"""bench/ times each shape's cases together: interleaved rounds, an A/A copy, adaptive sampling.

Each case's pytest-benchmark record holds its own samples (so saving and
comparing work unchanged), its raw samples travel in extra_info, the run's
noise floor lands in machine_info and at the end of the terminal output.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from matmul import MatmulShape
from matmul.core.registry import Unavailable
from matmul.measure.grid import AA_SUFFIX, CaseTiming, GroupTiming, time_group
from matmul.measure.interleave import Rounds, RoundSettings
from matmul.measure.peak import PROBE

#: Timed groups whose printed summaries and spreads depend on a quiet machine: each runs alone under -n.
pytestmark = pytest.mark.perf

ROOT = Path(__file__).resolve().parents[1]
TINY = RoundSettings(min_rounds=4, budget_s=1.0)


def _bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--e2e-models", "none", "-q", "-p", "no:cacheprovider", "--kernels", "qkv",
         "--m-values", "8", f"--benchmark-json={out}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_a_shape_is_timed_as_one_group_with_its_aa_copy(tmp_path):
    proc, data = _bench(tmp_path, "--variants", "full,rule_based,numpy", "--group-budget", "3", "--rounds", "6")
    cases = {c["params"]["variant"]: c for c in data["benchmarks"]}
    assert set(cases) == {"full", "rule_based", "numpy"}  # the A/A copy is a control, not a case
    rounds = {c["extra_info"]["group_rounds"] for c in cases.values()}
    assert len(rounds) == 1 and rounds.pop() >= 6
    for name, case in cases.items():
        info, stats = case["extra_info"], case["stats"]
        assert info["interleaved"] is True and info["anchor"] == "rule_based" and info["aa_variant"] == "rule_based"
        assert len(info["samples_s"]) == stats["rounds"] == info["group_rounds"]
        assert stats["median"] == pytest.approx(statistics.median(info["samples_s"]))
        assert case["options"]["timer"] == "interleaved_rounds"
        assert info["aa"]["ratio"] > 0 and info["noise_floor"] >= 0 and isinstance(info["inconclusive"], bool)
        assert info["noise_floor_best"] >= 0  # the A/A pair by best times: the floor between runs
        if name == "rule_based":
            assert "to_anchor" not in info  # the anchor has no ratio to itself
        else:
            r = info["to_anchor"]
            assert r["ci_lo"] <= r["ratio"] <= r["ci_hi"] and 0 <= r["p"] <= 1
        fastest = sorted(info["samples_s"])[:max(3, math.ceil(0.05 * len(info["samples_s"])))]
        assert info["best_s"] == pytest.approx(statistics.fmean(fastest)) and info["best_s"] <= stats["median"]
        if name != "numpy":
            lo, hi = info["speedup_vs_numpy_ci"]
            assert lo <= info["speedup_vs_numpy"] <= hi
            lo, hi = info["speedup_vs_numpy_best_ci"]
            assert lo <= info["speedup_vs_numpy_best"] <= hi
            assert info["speedup_vs_numpy_best"] == pytest.approx(info["numpy_best_s"] / info["best_s"])
        # percent of the peak probe timed in these rounds, and of the peak measured once for the run
        peak = info["peak_gflops_in_rounds"]
        assert info["pct_peak"] == pytest.approx(100 * info["gflops"] / peak)
        assert info["pct_peak_run"] == pytest.approx(100 * info["gflops"] / info["peak_gflops"])
        assert info["pct_peak_ci"][0] <= info["pct_peak"] <= info["pct_peak_ci"][1]
        # the probe's own samples, one per round, for report --normalize peak
        probe = info["peak_samples_s"]
        assert len(probe) == len(info["samples_s"])
        assert peak == pytest.approx(info["peak_probe_flops"] / statistics.median(probe) / 1e9)
    noise = data["machine_info"]["matmul"]["noise_floor"]
    assert noise["groups"] == 1 and noise["per_shape"][0]["shape"] == "qkv-M8-NN"
    assert noise["floor_max"] == pytest.approx(cases["full"]["extra_info"]["noise_floor"])
    assert "in this run, differences below" in proc.stdout and "are noise" in proc.stdout
    assert noise["floor_best_max"] == pytest.approx(cases["full"]["extra_info"]["noise_floor_best"])
    assert "between runs, compare best times" in proc.stdout
    # the case whose interval was widest: in every case's extra_info, the run's summary and the terminal line
    widest = {c["extra_info"]["group_widest_case"] for c in cases.values()}
    assert len(widest) == 1 and widest <= {"full", "numpy", "rule_based" + AA_SUFFIX, PROBE}
    assert noise["per_shape"][0]["widest_case"] in widest and f"({widest.pop()}) after" in proc.stdout


def test_processes_time_each_group_in_worker_processes_and_save_their_spread(tmp_path):
    proc, data = _bench(tmp_path, "--variants", "full,rule_based,numpy", "--group-budget", "2", "--rounds", "4",
                        "--processes", "2")
    cases = {c["params"]["variant"]: c for c in data["benchmarks"]}
    for name, case in cases.items():
        info = case["extra_info"]
        assert info["processes"] == 2 and len(info["process_best_s"]) == 2 and min(info["process_best_s"]) > 0
        assert len(info["samples_s"]) == info["group_rounds"] == case["stats"]["rounds"] >= 8
        assert info["best_s"] <= min(info["process_best_s"]) * (1 + 1e-9)  # the pooled fastest
    assert cases["rule_based"]["extra_info"]["process_spread"] is None  # the anchor
    anchor = cases["rule_based"]["extra_info"]["process_best_s"]
    for name in ("full", "numpy"):
        to_anchor = [b / a for b, a in zip(cases[name]["extra_info"]["process_best_s"], anchor)]
        assert cases[name]["extra_info"]["process_spread"] == pytest.approx(max(to_anchor) / min(to_anchor))
    assert cases["full"]["extra_info"]["hot_loop"] is not None  # read by the first worker
    assert cases["numpy"]["extra_info"]["agreement_check"] == "numpy_alone"  # bracketed by the first and last
    noise = data["machine_info"]["matmul"]["noise_floor"]
    assert noise["processes"] == 2 and noise["per_shape"][0]["process_spread_case"] in ("full", "numpy")
    assert re.search(r"qkv-M8-NN .*, (full|numpy) \d\.\d\dx apart over processes \(A/A copy \d\.\d\dx\)",
                     proc.stdout), proc.stdout[-2000:]
    assert "each shape was timed in 2 worker processes" in proc.stdout


def test_no_interleave_times_cases_one_after_another(tmp_path):
    proc, data = _bench(tmp_path, "--variants", "full", "--no-interleave", "--rounds", "3")
    (case,) = data["benchmarks"]
    assert case["extra_info"]["interleaved"] is False and case["stats"]["rounds"] == 3
    assert "samples_s" not in case["extra_info"] and data["machine_info"]["matmul"]["noise_floor"] is None
    assert "A/A noise floor" not in proc.stdout


def test_a_case_that_cannot_be_served_is_named_and_the_others_are_timed(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))  # no MetaSchedule record anywhere
    g = time_group(["metaschedule", "full", "numpy"], MatmulShape(8, 32, 32), settings=TINY)
    assert isinstance(g.errors["metaschedule"], Unavailable)
    assert set(g.cases) == {"full", "numpy"} and g.aa_of == "full" and g.anchor == "full"
    assert g.cases["numpy"].vs_numpy is None and g.cases["full"].vs_numpy.value > 0
    assert g.aa is not None and g.floor is not None and g.rounds >= 4
    assert g.cases["full"].agreement_check == "time_evaluator"


def test_without_an_aa_pair_the_group_says_so():
    g = time_group(["full", "numpy"], MatmulShape(8, 32, 32), settings=TINY, aa=None)
    assert g.aa is None and g.floor is None and g.summary()["aa"] is None
    assert not any(n.endswith(AA_SUFFIX) for n in g.cases)


def test_a_group_times_tvm_kernels_first_with_the_aa_copy_beside_its_original(monkeypatch):
    # one pool switch each way per round, and the same neighbours for the A/A pair in mirrored rounds
    from matmul.measure import grid
    from matmul.measure.candidates import Candidate

    shape = MatmulShape(8, 16, 16)

    def fake_prepare(name, shape, layout="NN", fresh=False):
        kind = "reference" if name in ("numpy", "torch") else "tvm"
        return Candidate(name, kind, shape, layout, lambda: None, 1)

    seen = []

    def fake_rounds(order, **kwargs):
        seen.extend(c.name for c in order)
        raise RuntimeError("stop here")

    monkeypatch.setattr(grid, "prepare", fake_prepare)
    monkeypatch.setattr(grid, "time_rounds", fake_rounds)
    monkeypatch.setattr(grid, "_alone", lambda *a: None)
    with pytest.raises(RuntimeError, match="stop here"):
        time_group(["numpy", "full", "rule_based", "torch", "ml_guided"], shape)
    assert seen == ["full", "rule_based", "rule_based" + AA_SUFFIX, "ml_guided", PROBE, "numpy", "torch"]


def _finished(probe: list[float], case: list[float]) -> GroupTiming:
    g = GroupTiming(MatmulShape(8, 8, 8), "NN", probe_flops=1e9)
    g.cases = {"k": CaseTiming("k", case, 1, None), PROBE: CaseTiming(PROBE, probe, 1, None)}
    g.finish(Rounds([case, probe], [1, 1], None, [None, None], True, 1.0, TINY))
    return g


def test_percent_of_peak_follows_the_clock_of_its_own_rounds():
    """Synthetic samples: the clock drops by a third in the second half of the rounds and both the kernel and
    the probe slow down with it. Against the probe of the same rounds the kernel stays at exactly 40% of peak;
    against a peak measured once, before the drop, it would read 30% to 40% depending on when it ran."""
    clock = [1.0] * 8 + [1.5] * 8
    probe = [1e-3 * c for c in clock]  # 1 GFLOP per call: 1000 GFLOP/s at full clock
    case = [2.5e-3 * c for c in clock]  # 1 GFLOP per call at 40% of it
    g = _finished(probe, case)
    assert PROBE not in g.cases and g.peak is not None
    pct = g.cases["k"].pct_peak(1e9, g.probe_flops)
    assert pct.value == pytest.approx(40.0) and pct.lo == pytest.approx(40.0) and pct.hi == pytest.approx(40.0)
    assert g.peak_gflops == pytest.approx(1e9 / 1.25e-3 / 1e9)  # the median clock's peak
    late = _finished(probe[8:], case[8:])  # the kernel timed only after the drop: still 40% of its own peak
    assert late.cases["k"].pct_peak(1e9, late.probe_flops).value == pytest.approx(40.0)
    assert 100 * 1e9 / statistics.median(case[8:]) / 1e9 / (1e9 / probe[0] / 1e9) == pytest.approx(100 / 3.75)


def test_a_group_times_the_peak_probe_in_its_rounds():
    g = time_group(["full"], MatmulShape(8, 32, 32), settings=TINY)
    assert set(g.cases) == {"full"} and g.peak is not None and len(g.peak.samples) == g.rounds
    assert g.peak_gflops > 0 and g.summary()["peak_gflops_in_rounds"] == g.peak_gflops
    pct = g.cases["full"].pct_peak(MatmulShape(8, 32, 32).flops, g.probe_flops)
    assert 0 < pct.lo <= pct.value <= pct.hi
    assert time_group(["full"], MatmulShape(8, 32, 32), settings=TINY, probe=False).peak is None
