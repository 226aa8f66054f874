"""Faults and bad input (issue 19): no crash, no hang, no lost record, and a wrong kernel never passes.

Each probe is a test: the bad input, the error class and message, and the files left byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from matmul import MatmulShape, host_facts, verify
from matmul.core.runner import CompiledKernel, compile_module
from matmul.core.verify import VerificationError
from matmul.measure import candidates

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "tuning_db"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matmul", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# --------------------------------------------------------------------------- a kernel that never zeroes C
M, K, N = 4, 8, 8


@T.prim_func(s_tir=True)
def _accumulating(A: T.Buffer((M, K), "float32"), B: T.Buffer((K, N), "float32"), C: T.Buffer((M, N), "float32")):
    # C += A @ B: the reduction's init is lost, as when decompose_reduction goes wrong
    for i, j, k in T.grid(M, N, K):
        with T.sblock("C"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]


def _lost_init_kernel() -> CompiledKernel:
    facts = host_facts()
    mod = tvm.IRModule({"main": _accumulating})
    return CompiledKernel("lost_init", MatmulShape(M, K, N), "float32", "NN", facts,
                          compile_module(mod, facts.target()), mod)


def test_a_kernel_that_never_zeroes_c_fails_verification():
    with pytest.raises(VerificationError, match="call 1 on an output buffer full of garbage"):
        verify(_lost_init_kernel())


def test_the_bench_gate_refuses_a_kernel_that_never_zeroes_c(monkeypatch):
    monkeypatch.setattr(candidates, "build_cached", lambda *a, **k: _lost_init_kernel())
    with pytest.raises(VerificationError, match="lost_init|full on"):
        candidates.prepare("full", MatmulShape(M, K, N))


def test_a_kernel_that_accumulates_into_a_zeroed_c_fails_on_its_second_call():
    """Even when the buffer happens to start at zero, the second call on the first call's output catches it."""
    kernel = _lost_init_kernel()
    from matmul.core.verify import check_calls, make_inputs

    a, b = make_inputs(kernel.shape, seed=1)
    ta, tb = tvm.runtime.tensor(a, kernel.device), tvm.runtime.tensor(b, kernel.device)
    tc = tvm.runtime.tensor(np.zeros((M, N), "float32"), kernel.device)
    with pytest.raises(VerificationError, match="call 2 again on its own output"):
        check_calls(lambda: kernel(ta, tb, tc), tc.numpy, a, b, what="lost_init")
