"""R12's one-vector j-pack where a GEMV's B exceeds half of L3: the rules' config (new) against the same shape with
R2's j-pack pinned (old, the config before the rule), an A/A copy of the new and NumPy, in 12 interleaved blocks.
The shapes where B stays within half of L3 keep R2's j-pack (old and new are one config there: an A/A check).

Run from the repository root: ``python evidence/<profile>/gemv-dram/measure.py gemv-dram.csv``.
"""

import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.paired import write_rows
from matmul.measure.stats import ratio_of_medians
from matmul.schedules.rules.decide import _register_tile, decide, vector_registers

facts = host_facts()
rows = []
for model in ("bert-large", "vit-huge", "llama2-7b", "albert-xxlarge"):
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for M in (1, 4):
            shape = kernel_shape(kernel, M, model)
            new_plan = decide(shape, facts)
            lanes = facts.simd_lanes_fp32
            old_jpack = _register_tile(shape, lanes, vector_registers(facts))[1] * lanes  # R2's j-pack
            cands = [prepare(f"rule_based[jpack={old_jpack}]", shape, fresh=True),
                     prepare("rule_based", shape, fresh=True), prepare("rule_based", shape, fresh=True),
                     prepare("numpy", shape)]
            t_old, t_new, t_twin, t_np = time_interleaved(cands, blocks=12, calls=10)
            r, aa = ratio_of_medians(t_old, t_new, paired=True), ratio_of_medians(t_twin, t_new, paired=True)
            vs_np = ratio_of_medians(t_np, t_new, paired=True)
            row = dict(model=model, kernel=kernel, M=M, K=shape.K, N=shape.N,
                       b_mib=round(shape.K * shape.N * 4 / 2**20, 1), l3_mib=round((facts.l3_bytes or 0) / 2**20),
                       old_jpack=old_jpack, new_jpack=new_plan.config.jpack,
                       old_ms=round(statistics.median(t_old) * 1e3, 4), new_ms=round(statistics.median(t_new) * 1e3, 4),
                       speedup=round(r.value, 3), ci_low=round(r.lo, 3), ci_high=round(r.hi, 3), p=round(r.p, 4),
                       aa_ratio=round(aa.value, 3), aa_ci_low=round(aa.lo, 3), aa_ci_high=round(aa.hi, 3),
                       new_vs_numpy=round(vs_np.value, 3), vs_numpy_ci_low=round(vs_np.lo, 3),
                       vs_numpy_ci_high=round(vs_np.hi, 3))
            print(row, flush=True)
            rows.append(row)
write_rows(sys.argv[1], rows)
