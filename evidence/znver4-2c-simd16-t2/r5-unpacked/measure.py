"""R5 on this CPU: ``rule_based`` (B packed where R5 packs it) against the same config with B read in place
(``pack_b=false``), at M = 16-128, timed interleaved with an A/A copy of the unpacked build,
and ``ml_guided`` (this profile's model) in the same rounds.

Run from the repository root: ``python evidence/<profile>/r5-unpacked/measure.py r5-unpacked.csv``; with
``--small-pages`` the operands are not asked to be huge pages (4 KiB pages, as before ``core/memory.py``).
"""

import mmap
import statistics
import sys

from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.paired import write_rows
from matmul.measure.stats import ratio_of_medians

small = "--small-pages" in sys.argv
if small and hasattr(mmap, "MADV_HUGEPAGE"):
    del mmap.MADV_HUGEPAGE  # operand_empty then leaves ordinary pages
out = [a for a in sys.argv[1:] if not a.startswith("--")][0]
rows = []
for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
    for M in (16, 32, 64, 96, 128):
        shape = kernel_shape(kernel, M)
        packed = prepare("rule_based", shape, fresh=True)
        if not packed.decisions["pack_b"]:
            print(f"{kernel} M={M}: the rules already read B in place; nothing to compare", flush=True)
            continue
        unpacked = "rule_based[pack_b=false]"
        cands = [packed, prepare(unpacked, shape, fresh=True), prepare(unpacked, shape, fresh=True),
                 prepare("ml_guided", shape, fresh=True)]
        t_packed, t_new, t_twin, t_ml = time_interleaved(cands, blocks=12, calls=10)
        r, aa = ratio_of_medians(t_packed, t_new, paired=True), ratio_of_medians(t_twin, t_new, paired=True)
        ml = ratio_of_medians(t_packed, t_ml, paired=True)
        row = dict(pages="4KiB" if small else "2MiB", kernel=kernel, M=M, K=shape.K, N=shape.N,
                   b_row_pages=shape.N * 4 / 4096,
                   packed_ms=round(statistics.median(t_packed) * 1e3, 4),
                   unpacked_ms=round(statistics.median(t_new) * 1e3, 4),
                   speedup=round(r.value, 3), ci_low=round(r.lo, 3), ci_high=round(r.hi, 3), p=round(r.p, 4),
                   aa_ratio=round(aa.value, 3), aa_ci_low=round(aa.lo, 3), aa_ci_high=round(aa.hi, 3),
                   ml_pack_b=cands[3].decisions.get("pack_b"), ml_speedup=round(ml.value, 3),
                   ml_ci_low=round(ml.lo, 3), ml_ci_high=round(ml.hi, 3))
        print(row, flush=True)
        rows.append(row)
write_rows(out, rows)
