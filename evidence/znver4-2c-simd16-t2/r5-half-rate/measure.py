"""R5 on a core whose widest FMAs issue at half rate: the rules' config now (B read in place up to 192 rows) against
the config the same rules give for full-rate FMAs (``half_rate_fma=False``, pinned knob by knob), an A/A copy of
the new build and NumPy, in 12 interleaved blocks. Every shape of the default BERT grid and of the model rows at
M = 7 and 77 where the two configs differ; the BERT shapes where they agree are listed as unchanged.

Run from the repository root: ``python evidence/<profile>/r5-half-rate/measure.py r5-half-rate.csv``.
"""

import dataclasses
import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import M_SWEEP, MODELS, kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.paired import before_after, write_rows
from matmul.schedules.rules import decide
from matmul.schedules.template import config_name

facts = host_facts()
assert facts.half_rate_fma, f"{facts.profile}: its FMAs issue at full rate; the rules' config is the old one here"
full_rate = dataclasses.replace(facts, half_rate_fma=False)
loads = [("bert-base", k, M) for k in ("qkv", "mlp_expand", "mlp_reduce") for M in M_SWEEP]
loads += [(model, k, M) for M in (7, 77) for model in MODELS for k in ("qkv", "mlp_expand", "mlp_reduce")]
rows = []
for model, kernel, M in loads:
    shape = kernel_shape(kernel, M, model)
    old, new = decide(shape, full_rate).config, decide(shape, facts).config
    if old == new:
        print(f"{model} {kernel} M={M}: unchanged", flush=True)
        continue
    old_c, new_c, twin = (prepare(config_name(old), shape, fresh=True), prepare("rule_based", shape, fresh=True),
                          prepare("rule_based", shape, fresh=True))
    assert new_c.decisions["pack_b"] == new.pack_b and old_c.decisions["pack_b"] == old.pack_b
    row = dict(model=model, kernel=kernel, M=M, K=shape.K, N=shape.N, b_row_pages=shape.N * 4 / 4096,
               old_pack_b=old.pack_b, old_tn=old.tn, new_pack_b=new.pack_b, new_tn=new.tn,
               **before_after(old_c, new_c, twin, blocks=12, reference=prepare("numpy", shape)))
    print(row, flush=True)
    rows.append(row)
write_rows(sys.argv[1], rows)
