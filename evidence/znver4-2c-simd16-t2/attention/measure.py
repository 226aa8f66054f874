"""Attention's batched matmuls: before (R6/R7 blind to the heads, pad copies on one thread) and after.

Run from the repository root: ``python evidence/<profile>/attention/measure.py attention.csv``. For each
sequence length, the scores (NT, with the scale) and context (NN) functions of the BERT-base layer are
scheduled by ``rule_based`` the old way and the new way and timed interleaved with an A/A copy of the new.
"""

import sys

import numpy as np
import tvm
from tvm.s_tir import Schedule

from matmul.core.hardware import configure_runtime_threads, host_facts
from matmul.core.registry import ScheduleContext, get_variant
from matmul.e2e.detect import find_matmul
from matmul.e2e.layer import export, layer_spec, lower
from matmul.e2e.schedule import _fuse_epilogue
from matmul.e2e.versus import _function_candidate
from matmul.measure.interleave import calls_for
from matmul.measure.paired import before_after, write_rows
from matmul.schedules.rules import apply as ap

facts = host_facts()
configure_runtime_threads()
new_copy = ap._parallel_copy


def old_copy(sch, block):  # the pad copies up to 076910e: the first loop only
    sch.parallel(sch.get_loops(block)[0])


def scheduled(func, info, old):
    ap._parallel_copy = old_copy if old else new_copy
    try:
        ctx = ScheduleContext(info.shape, info.dtype, info.layout, facts, block=info.block,
                              slices=1 if old else info.slices)
        sch = Schedule(tvm.IRModule({"main": func}))
        get_variant("rule_based").apply(sch, ctx)
        _fuse_epilogue(sch, info)
        return sch.mod["main"]
    finally:
        ap._parallel_copy = new_copy


rows = []
rng = np.random.default_rng(0)
for seq in (32, 128, 384):
    low = lower(export(layer_spec("bert-base", seq))[0])
    for gv, func in sorted(low.functions.items(), key=lambda kv: kv[0].name_hint):
        info = find_matmul(func) if isinstance(func, tvm.tirx.PrimFunc) else None
        if info is None or not info.batch:
            continue
        old = _function_candidate(scheduled(func, info, True), info, "old", facts, rng)
        new = _function_candidate(scheduled(func, info, False), info, "new", facts, rng)
        twin = _function_candidate(scheduled(func, info, False), info, "new (A/A)", facts, rng)
        row = dict(seq=seq, primfunc=gv.name_hint, matmul=info.describe(),
                   **before_after(old, new, twin, calls=calls_for(new, 10)))
        print(row, flush=True)
        rows.append(row)
write_rows(sys.argv[1], rows)
