"""GEMV heads whose N is no multiple of the vector: the rules before (N padded, B copied per call) and now
(R3's in-place tail; R12's whole rows where column ranges would be uneven), interleaved with an A/A copy of
the new kernel and NumPy, in both build orders. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/gemv-tail/measure.py old-configs.json out.csv

Where the old rules' exact config now builds the tail kernel (M = 7-16 here: their tn of one j-pack divides the
whole j-packs), ``old-configs.json`` pins the nearest padded one instead (tn of 3 j-packs, which does not).
"""
import csv
import json
import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.schedules.rules import decide, parse_overrides

old_configs = json.load(open(sys.argv[1]))
facts = host_facts()
rows = []
for spec, old in old_configs.items():
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    pinned = decide(shape, facts, overrides=parse_overrides(old)[1]).config
    assert pinned.tail(shape) == 0, f"{old} would build the new tail kernel"
    for order in ("new-first", "old-first"):
        names = ["rule_based", "rule_based", old, "numpy"] if order == "new-first" else \
            [old, "rule_based", "rule_based", "numpy"]
        cands = [prepare(n, shape, fresh=n == "rule_based" and names[:i].count("rule_based") == 1)
                 for i, n in enumerate(names)]
        r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, budget_s=20, ci_width=0.03))
        med = dict(zip(("new", "new_aa", "old", "numpy") if order == "new-first" else ("old", "new", "new_aa", "numpy"),
                       (statistics.median(s) for s in r.samples)))
        row = {"shape": spec, "order": order, "new_us": round(med["new"] * 1e6, 1),
               "aa": round(med["new"] / med["new_aa"], 3), "old_us": round(med["old"] * 1e6, 1),
               "numpy_us": round(med["numpy"] * 1e6, 1), "new_over_old": round(med["old"] / med["new"], 2),
               "new_over_numpy": round(med["numpy"] / med["new"], 2),
               "new_gbs": round(K * N * 4 / med["new"] / 1e9, 1), "numpy_gbs": round(K * N * 4 / med["numpy"] / 1e9, 1),
               "rounds": len(r.samples[0]), "new_config": decide(shape, facts).config.as_dict(), "old_config": old}
        rows.append(row)
        print({k: v for k, v in row.items() if k not in ("new_config", "old_config")}, flush=True)
        with open(sys.argv[2], "w", newline="") as f:  # after every group: a later failure keeps these
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
