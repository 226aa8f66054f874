"""A's task block in L2 (R8): the rules now (``ifirst`` where the task's block of A puts more lines in one L2
set than the L2 has ways) against the same config with the old loop order pinned (``order=jfirst``),
interleaved with an A/A copy of the new kernel and NumPy; the build order alternates from one shape to the
next. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/a-block-sets/measure.py out.csv LAYOUT:MxKxN ...
"""
import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.measure.paired import write_rows
from matmul.schedules.rules import block_set_load, decide

facts = host_facts()
rows = []
for n, key in enumerate(sys.argv[2:]):
    layout, spec = key.split(":")
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    c = decide(shape, facts, layout=layout).config
    load = block_set_load(c.padded(shape)[2] * 4, c.tm, c.tk * 4, facts.l2_bytes // facts.l2_ways)  # as R8 counts
    old = "rule_based[order=jfirst]"
    labels = ["new", "new_aa", "old", "numpy"] if n % 2 == 0 else ["old", "new", "new_aa", "numpy"]
    cands = [prepare({"old": old, "numpy": "numpy"}.get(label, "rule_based"), shape, layout=layout,
                     fresh=label != "numpy") for label in labels]
    r = time_rounds(cands, anchor=labels.index("numpy"),
                    settings=RoundSettings(min_rounds=12, budget_s=30, ci_width=0.03))
    med = dict(zip(labels, (statistics.median(s) for s in r.samples)))
    row = {"layout": layout, "shape": spec, "order": labels[0] + "-first", "new_order": c.order,
           "tm": c.tm, "tn_jpacks": c.tn // c.jpack, "lines_per_set": load, "l2_ways": facts.l2_ways,
           "new_ms": round(med["new"] * 1e3, 3), "old_ms": round(med["old"] * 1e3, 3),
           "numpy_ms": round(med["numpy"] * 1e3, 3), "aa": round(med["new"] / med["new_aa"], 3),
           "new_over_old": round(med["old"] / med["new"], 3), "new_over_numpy": round(med["numpy"] / med["new"], 3),
           "old_over_numpy": round(med["numpy"] / med["old"], 3),
           "new_gflops": round(shape.flops / med["new"] / 1e9, 1), "rounds": len(r.samples[0])}
    rows.append(row)
    print(row, flush=True)
write_rows(sys.argv[1], rows)
