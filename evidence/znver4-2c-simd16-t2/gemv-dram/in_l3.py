"""The control for R12's one-vector j-pack: GEMVs whose B stays within half of L3 (where the rule keeps R2's
j-pack), timed against the same config with one vector across j pinned, an A/A copy and NumPy, 12 interleaved
blocks. Run from the repository root: ``python evidence/<profile>/gemv-dram/in_l3.py in-l3.csv``.
"""

import statistics
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.paired import write_rows
from matmul.measure.stats import ratio_of_medians
from matmul.schedules.rules.decide import decide

facts = host_facts()
lanes = facts.simd_lanes_fp32
rows = []
for model in ("bert-base", "bert-large", "t5-small"):
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        shape = kernel_shape(kernel, 1, model)
        rules = decide(shape, facts).config
        if rules.jpack == lanes:
            continue  # R2 or R12 already takes one vector: nothing to compare
        cands = [prepare("rule_based", shape, fresh=True), prepare(f"rule_based[jpack={lanes}]", shape, fresh=True),
                 prepare("rule_based", shape, fresh=True), prepare("numpy", shape)]
        t_rules, t_one, t_twin, t_np = time_interleaved(cands, blocks=12, calls=10)
        r, aa = ratio_of_medians(t_rules, t_one, paired=True), ratio_of_medians(t_twin, t_rules, paired=True)
        row = dict(model=model, kernel=kernel, M=1, K=shape.K, N=shape.N,
                   b_mib=round(shape.K * shape.N * 4 / 2**20, 1), l3_mib=round((facts.l3_bytes or 0) / 2**20),
                   rules_jpack=rules.jpack, rules_ms=round(statistics.median(t_rules) * 1e3, 4),
                   one_vector_ms=round(statistics.median(t_one) * 1e3, 4),
                   one_vector_speedup=round(r.value, 3), ci_low=round(r.lo, 3), ci_high=round(r.hi, 3),
                   p=round(r.p, 4), aa_ratio=round(aa.value, 3),
                   rules_vs_numpy=round(ratio_of_medians(t_np, t_rules, paired=True).value, 3))
        print(row, flush=True)
        rows.append(row)
write_rows(sys.argv[1], rows)
