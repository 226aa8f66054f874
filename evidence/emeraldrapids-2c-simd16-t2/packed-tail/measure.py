"""Heads whose N is no multiple of the j-pack, at M where R5 packs B: the rules before (N padded: pad_einsum's
copy of all of B, then the packing) and now (R3's tail: the whole j-packs packed and tiled, the last columns
read in place by loops of their own), interleaved with an A/A copy of the new kernel and NumPy, in both build
orders. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/packed-tail/measure.py old-configs.json out.csv

``old-configs.json`` holds the configs the rules chose before the change (`decide` at its parent commit). The
old kernel is each built with :meth:`RuleConfig.tail` answering 0, which is what the code before the change did
for every config that packs B: N padded to the tiles.
"""
import contextlib
import csv
import json
import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.schedules.rules import RuleConfig, decide


@contextlib.contextmanager
def padded_n():
    tail = RuleConfig.tail
    RuleConfig.tail = lambda self, shape: 0
    try:
        yield
    finally:
        RuleConfig.tail = tail


old_configs = json.load(open(sys.argv[1]))
facts = host_facts()
rows = []
for spec, old in old_configs.items():
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    new = decide(shape, facts).config
    assert new.tail(shape), f"{spec}: the rules leave no tail here"
    for order in ("new-first", "old-first"):
        labels = ["new", "new_aa", "old", "numpy"] if order == "new-first" else ["old", "new", "new_aa", "numpy"]
        cands = []
        for label in labels:
            if label == "old":
                with padded_n():
                    cands.append(prepare(old, shape, fresh=True))
            else:
                cands.append(prepare("numpy" if label == "numpy" else "rule_based", shape, fresh=label != "numpy"))
        r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, budget_s=20, ci_width=0.03))
        med = dict(zip(labels, (statistics.median(s) for s in r.samples)))
        row = {"shape": spec, "order": order, "new_ms": round(med["new"] * 1e3, 3),
               "aa": round(med["new"] / med["new_aa"], 3), "old_ms": round(med["old"] * 1e3, 3),
               "numpy_ms": round(med["numpy"] * 1e3, 3), "new_over_old": round(med["old"] / med["new"], 2),
               "new_over_numpy": round(med["numpy"] / med["new"], 2),
               "new_gflops": round(2 * M * K * N / med["new"] / 1e9, 1), "rounds": len(r.samples[0]),
               "converged": r.converged, "tail": new.tail(shape), "new_config": new.as_dict(), "old_config": old}
        rows.append(row)
        print({k: v for k, v in row.items() if k not in ("new_config", "old_config")}, flush=True)
        with open(sys.argv[2], "w", newline="") as f:  # after every group: a later failure keeps these
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
