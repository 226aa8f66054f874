"""NT packing: gather along j (b42caad) vs tiles loaded along K (after), timed interleaved with an A/A copy.

Run from the repository root: ``python evidence/<profile>/nt-packing/measure.py nt-packing.csv``.
"""

import sys

from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.paired import before_after, write_rows
from matmul.schedules.rules import apply as ap

new_tiles = ap._transpose_tiles


def old_tiles(sch, copy, lanes):  # the packing of b42caad: vectors along j, each a gather of rows
    j, k = copy  # on these shapes TK is a multiple of the vector width, so lanes is that width
    sch.reorder(k, j)
    _, lane = sch.split(j, [None, lanes])
    sch.vectorize(lane)


rows = []
for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
    for M in (16, 128, 384):
        shape = kernel_shape(kernel, M)
        ap._transpose_tiles = old_tiles
        old = prepare("rule_based", shape, layout="NT", fresh=True)
        ap._transpose_tiles = new_tiles
        new = prepare("rule_based", shape, layout="NT", fresh=True)
        twin = prepare("rule_based", shape, layout="NT", fresh=True)
        row = dict(kernel=kernel, M=M, K=shape.K, N=shape.N, layout="NT", **before_after(old, new, twin))
        print(row, flush=True)
        rows.append(row)
write_rows(sys.argv[1], rows)
