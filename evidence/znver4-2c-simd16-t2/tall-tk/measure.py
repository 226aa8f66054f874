"""R4 on a core whose widest FMAs issue at half rate, from 192 rows of A: the rules' config (TK from 1/8 of L2)
against the same config with R4's L1-sized TK (as on a full-rate core: the config before, every other knob
re-decided for it), an A/A copy of the new build and NumPy, 12 interleaved blocks, NN. The BERT-base grid at
M >= 192 and every model row of ``workloads.MODELS`` at M = 200; shapes where the two configs agree are listed as
unchanged.

Run from the repository root: ``python evidence/<profile>/tall-tk/measure.py tall-tk.csv [--quick]``
(``--quick``: 6 blocks, and the model rows whose B exceeds L3 are left out). ``--below`` measures the bound
instead: the BERT-base grid at M = 96 and 128, the rules' config (L1-sized TK) as "old" against the same config
with R4's L2-sized TK pinned as "new" (``below-bound.csv``).
"""

import dataclasses
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import KERNELS, M_SWEEP, MODELS, kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.paired import before_after, write_rows
from matmul.schedules.rules import HALF_RATE_L2_TK_MIN_ROWS, decide
from matmul.schedules.template import config_name

facts = host_facts()
quick = "--quick" in sys.argv
below = "--below" in sys.argv
full_rate = dataclasses.replace(facts, half_rate_fma=False)  # R4's TK from L1 there; R2 (the j-pack) the same

shapes = [(k, M, kernel_shape(k, M)) for k in ("qkv", "mlp_expand", "mlp_reduce") for M in M_SWEEP
          if (M >= HALF_RATE_L2_TK_MIN_ROWS) != (below and M >= HALF_RATE_L2_TK_MIN_ROWS // 2)]
for name in () if below else MODELS:
    if name == "bert-base":
        continue
    for kernel in KERNELS:
        shape = kernel_shape(kernel, 200, name)
        if quick and shape.K * shape.N * 4 * 2 > (facts.l3_bytes or 0):
            continue
        shapes.append((f"{name}/{kernel}", 200, shape))
rows = []
for label, M, shape in shapes:
    new = decide(shape, facts).config
    old = decide(shape, facts, overrides={"tk": decide(shape, full_rate).config.tk}).config
    if below:  # the rules' config is the L1-sized one there: "new" pins the L2-sized TK of the 192-row plan
        old, new = new, decide(shape, facts, overrides={"tk": decide(kernel_shape(label, 384), facts).config.tk}
                               ).config
    if old == new:
        print(f"{label} M={M}: unchanged", flush=True)
        continue
    names = (config_name(old), config_name(new), config_name(new)) if below else \
        (config_name(old), "rule_based", "rule_based")
    old_c, new_c, twin = (prepare(n, shape, fresh=True) for n in names)
    row = dict(workload=label, M=M, K=shape.K, N=shape.N, old_tk=old.tk, new_tk=new.tk, jpack=new.jpack,
               pack_b=new.pack_b, **before_after(old_c, new_c, twin, blocks=6 if quick else 12,
                                                  reference=prepare("numpy", shape)))
    print(row, flush=True)
    rows.append(row)
write_rows(sys.argv[1], rows)
