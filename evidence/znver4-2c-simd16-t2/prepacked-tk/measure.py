"""R4 for a weight packed once on a core whose widest FMAs issue at half rate: the rules' config for B packed
once (TK from L2) against the config for B packed per call (TK from L1, pinned knob by knob), both reading B's
panels packed once, NT (``nn.Linear``'s layout, as in the end-to-end layer), an A/A copy of the new build and
NumPy, 12 interleaved blocks. The BERT-base grid; shapes where the two configs agree are listed as unchanged.

Run from the repository root: ``python evidence/<profile>/prepacked-tk/measure.py prepacked-tk.csv``. (The CSV
here was written before the script took NumPy's interval from ``before_after``: it has ``new_vs_numpy`` alone.)
"""

import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import M_SWEEP, kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.paired import before_after, write_rows
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
        old_c, new_c, twin = (prepare(name, shape, layout="NT", b_constant=True, fresh=True)
                              for name in (config_name(old), "rule_based", "rule_based"))
        assert new_c.decisions["tk"] == new.tk and old_c.decisions["tk"] == old.tk
        row = dict(kernel=kernel, M=M, K=shape.K, N=shape.N, layout="NT", old_tk=old.tk, new_tk=new.tk,
                   jpack=new.jpack, **before_after(old_c, new_c, twin, blocks=12,
                                                   reference=prepare("numpy", shape, layout="NT")))
        print(row, flush=True)
        rows.append(row)
write_rows(sys.argv[1], rows)
