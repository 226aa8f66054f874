"""R4 for a weight packed once on a core whose widest FMAs issue at half rate: the rules' config for B packed
once (TK from L2) against the config for B packed per call (TK from L1, pinned knob by knob), both reading B's
panels packed once, NT (``nn.Linear``'s layout, as in the end-to-end layer), an A/A copy of the new build and
NumPy, 12 interleaved blocks. The BERT-base grid; shapes where the two configs agree are listed as unchanged.

Run from the repository root: ``python evidence/<profile>/prepacked-tk/measure.py prepacked-tk.csv``.
"""

import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import M_SWEEP, kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.paired import write_rows
from matmul.measure.stats import ratio_of_medians
from matmul.schedules.rules import decide
from matmul.schedules.template import config_name

facts = host_facts()
rows = []
for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
    for M in M_SWEEP:
        shape = kernel_shape(kernel, M)
        old = decide(shape, facts, layout="NT").config
        new = decide(shape, facts, layout="NT", b_constant=True).config
        if old == new:
            print(f"{kernel} M={M}: unchanged", flush=True)
            continue
        cands = [prepare(config_name(old), shape, layout="NT", b_constant=True, fresh=True),
                 prepare("rule_based", shape, layout="NT", b_constant=True, fresh=True),
                 prepare("rule_based", shape, layout="NT", b_constant=True, fresh=True),
                 prepare("numpy", shape, layout="NT")]
        assert cands[1].decisions["tk"] == new.tk and cands[0].decisions["tk"] == old.tk
        t_old, t_new, t_twin, t_np = time_interleaved(cands, blocks=12, calls=10)
        r, aa = ratio_of_medians(t_old, t_new, paired=True), ratio_of_medians(t_twin, t_new, paired=True)
        vs_np = ratio_of_medians(t_np, t_new, paired=True)
        row = dict(kernel=kernel, M=M, K=shape.K, N=shape.N, layout="NT", old_tk=old.tk, new_tk=new.tk,
                   jpack=new.jpack, old_ms=round(statistics.median(t_old) * 1e3, 4),
                   new_ms=round(statistics.median(t_new) * 1e3, 4), speedup=round(r.value, 3),
                   ci_low=round(r.lo, 3), ci_high=round(r.hi, 3), p=round(r.p, 4), aa_ratio=round(aa.value, 3),
                   aa_ci_low=round(aa.lo, 3), aa_ci_high=round(aa.hi, 3), new_vs_numpy=round(vs_np.value, 3))
        print(row, flush=True)
        rows.append(row)
write_rows(sys.argv[1], rows)
