"""NT packing: gather along j (b42caad) vs tiles loaded along K (after), timed interleaved with an A/A copy.

Run from the repository root: ``python evidence/<profile>/nt-packing/measure.py nt-packing.csv``.
"""
import csv
import statistics
import sys

from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.stats import ratio_of_medians
from matmul.schedules.rules import apply as ap

new_tiles = ap._transpose_tiles
def old_tiles(sch, copy, vector, tk):  # the packing of b42caad
    j, k = copy
    sch.reorder(k, j)
    _, lane = sch.split(j, [None, vector])
    sch.vectorize(lane)

rows = []
for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
    for M in (16, 128, 384):
        shape = kernel_shape(kernel, M)
        ap._transpose_tiles = old_tiles
        old = prepare("rule_based", shape, layout="NT", fresh=True)
        ap._transpose_tiles = new_tiles
        new = prepare("rule_based", shape, layout="NT", fresh=True)
        new2 = prepare("rule_based", shape, layout="NT", fresh=True)
        t_old, t_new, t_new2 = time_interleaved([old, new, new2], blocks=8, calls=10)
        r, aa = ratio_of_medians(t_old, t_new, paired=True), ratio_of_medians(t_new2, t_new, paired=True)
        row = dict(kernel=kernel, M=M, K=shape.K, N=shape.N, layout="NT",
                   gather_ms=round(statistics.median(t_old) * 1e3, 3),
                   tiles_ms=round(statistics.median(t_new) * 1e3, 3),
                   speedup=round(r.value, 3), ci_low=round(r.lo, 3), ci_high=round(r.hi, 3), p=round(r.p, 4),
                   aa_ratio=round(aa.value, 3), aa_ci_low=round(aa.lo, 3), aa_ci_high=round(aa.hi, 3))
        print(row, flush=True)
        rows.append(row)
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader(); w.writerows(rows)
