"""A batched matmul block (attention's heads: ``heads x (M x K x N)``, NN or NT), scheduled by a rules config,
compiled and run on small integers, for exactness tests of the batch loops."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule

from matmul import MatmulShape
from matmul.core.hardware import HostFacts
from matmul.schedules.rules import RuleConfig, apply_config


def run_batched(cfg: RuleConfig, one: MatmulShape, heads: int, layout: str, facts: HostFacts,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(C from the scheduled block, C from NumPy, the scheduled TIR) for ``heads`` slices of ``one``."""
    m, k, n = one.M, one.K, one.N
    a = te.placeholder((heads, m, k), name="A")
    b = te.placeholder((heads, k, n) if layout == "NN" else (heads, n, k), name="B")
    r = te.reduce_axis((0, k), name="k")
    if layout == "NN":
        out = te.compute((heads, m, n), lambda h, i, j: te.sum(a[h, i, r] * b[h, r, j], axis=r), name="C")
    else:
        out = te.compute((heads, m, n), lambda h, i, j: te.sum(a[h, i, r] * b[h, j, r], axis=r), name="C")
    sch = Schedule(tvm.IRModule({"main": te.create_prim_func([a, b, out])}))
    apply_config(sch, cfg, one, layout, "C")
    f = tvm.compile(sch.mod, target=facts.target())
    rng = np.random.default_rng(seed)
    av = rng.integers(-3, 4, (heads, m, k)).astype("float32")
    bv = rng.integers(-3, 4, (heads, k, n) if layout == "NN" else (heads, n, k)).astype("float32")
    res = tvm.runtime.tensor(np.full((heads, m, n), np.nan, "float32"))
    f(tvm.runtime.tensor(av), tvm.runtime.tensor(bv), res)
    return res.numpy(), av @ (bv if layout == "NN" else bv.transpose(0, 2, 1)), sch.mod.script()
