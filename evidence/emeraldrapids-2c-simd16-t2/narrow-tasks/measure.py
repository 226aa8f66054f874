"""R6's narrow tasks where B is packed for at most 128 rows: the rules before (up to four j-packs per task) and
now (at most 384 B of each row of B per task), interleaved with an A/A copy of the new kernel and NumPy. The
build order alternates from one shape to the next. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/narrow-tasks/measure.py old-configs.json out.csv

``old-configs.json`` holds, per ``LAYOUT:MxKxN``, the config the rules chose before the change (`decide` at its
parent commit). The old kernel is built as ``rule_based[tn=OLD]``: the other knobs follow from the rules as
before, which the script checks against the saved config.
"""
import csv
import json
import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.schedules.rules import decide

old_configs = json.load(open(sys.argv[1]))
facts = host_facts()
rows = []
for n, (key, old) in enumerate(old_configs.items()):
    layout, spec = key.split(":")
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    new = decide(shape, facts, layout=layout).config
    old_name = f"rule_based[tn={old['tn']}]"
    pinned = decide(shape, facts, layout=layout, overrides={"tn": old["tn"]}).config
    assert pinned.as_dict() == old, f"{key}: {old_name} is not the old config: {pinned.as_dict()} vs {old}"
    assert new.tn < old["tn"], f"{key}: the rules do not narrow this shape's tasks"
    labels = ["new", "new_aa", "old", "numpy"] if n % 2 == 0 else ["old", "new", "new_aa", "numpy"]
    cands = []
    for label in labels:
        name = {"old": old_name, "numpy": "numpy"}.get(label, "rule_based")
        cands.append(prepare(name, shape, layout=layout, fresh=label != "numpy"))
    r = time_rounds(cands, anchor=labels.index("numpy"),
                    settings=RoundSettings(min_rounds=12, budget_s=20, ci_width=0.03))
    med = dict(zip(labels, (statistics.median(s) for s in r.samples)))
    row = {"layout": layout, "shape": spec, "order": labels[0] + "-first", "new_tn": new.tn, "old_tn": old["tn"],
           "new_ms": round(med["new"] * 1e3, 4), "old_ms": round(med["old"] * 1e3, 4),
           "numpy_ms": round(med["numpy"] * 1e3, 4), "aa": round(med["new"] / med["new_aa"], 3),
           "new_over_old": round(med["old"] / med["new"], 3), "new_over_numpy": round(med["numpy"] / med["new"], 3),
           "old_over_numpy": round(med["numpy"] / med["old"], 3),
           "new_gflops": round(2 * M * K * N / med["new"] / 1e9, 1), "rounds": len(r.samples[0]),
           "converged": r.converged}
    rows.append(row)
    print(row, flush=True)
    with open(sys.argv[2], "w", newline="") as f:  # after every group: a later failure keeps these
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
