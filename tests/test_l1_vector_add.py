"""L1: the smallest end-to-end path, TE -> TIR -> schedule -> LLVM -> run."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import Schedule

from matmul import host_facts
from matmul.core.runner import compile_module


def _vector_add(n: int) -> tvm.IRModule:
    a = te.placeholder((n,), "float32", name="A")
    b = te.placeholder((n,), "float32", name="B")
    c = te.compute((n,), lambda i: a[i] + b[i], name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


@pytest.mark.parametrize("n", [1, 7, 1024, 1031])
@pytest.mark.parametrize("scheduled", [False, True], ids=["plain", "split-vec-par"])
def test_vector_add_matches_numpy(n, scheduled):
    sch = Schedule(_vector_add(n), debug_mask="all")
    if scheduled:
        (i,) = sch.get_loops(sch.get_sblock("C"))
        io, ii = sch.split(i, factors=[None, host_facts().simd_lanes_fp32])
        sch.parallel(io)
        sch.vectorize(ii)
    lib = compile_module(sch, host_facts().target())
    rng = np.random.default_rng(n)
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(n, np.float32), dev)
    lib["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), out)
    np.testing.assert_array_equal(out.numpy(), a + b)
