"""Compile a scheduled matmul for the host, run it, time it and show its code.

Compilation, execution and inspection live here; scheduling lives in
:mod:`matmul.core.registry` (families in :mod:`matmul.schedules`) and correctness checks in :mod:`matmul.core.verify`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm.s_tir import Schedule

from .fma import fma_pattern
from .gpu import CudaBuild, GpuSpec, build_cuda, gpu_present, gpu_spec
from .hardware import HardwareError, HostFacts, configure_runtime_threads, host_facts
from .hotloop import AsmError, HotLoop, hot_loop
from .kernel import accumulator_dtype, b_shape
from .memory import operand_copy
from .registry import get_variant, relayout_b, schedule, variant_names
from .verify import garbage
from .workloads import MatmulShape

#: Formats :meth:`CompiledKernel.source` can show.
SOURCE_KINDS = ("tir", "ll", "asm")
#: Formats :meth:`CudaKernel.source` can show.
CUDA_SOURCE_KINDS = ("tir", "cuda", "ptx")


def compile_module(mod: tvm.IRModule | Schedule, target: tvm.target.Target) -> tvm.runtime.Executable:
    """``tvm.compile`` a scheduled module (or a Schedule's module) for ``target``."""
    if isinstance(mod, Schedule):
        mod = mod.mod
    configure_runtime_threads()
    return tvm.compile(mod, target=target)


#: Byte alignment of every host tensor a kernel reads (TVM's own allocations: its generated code may assume it).
TENSOR_ALIGN = 64


def host_tensor(x: np.ndarray) -> tvm.runtime.Tensor:
    """``x`` copied into operand memory (:func:`~matmul.core.memory.operand_copy`: 2 MiB-aligned, huge pages where
    the host grants them), handed to TVM without a copy. The NumPy and PyTorch references read the same kind of
    memory, so a kernel and a reference, or two copies of one kernel, never differ by where their pages fell."""
    return tvm_ffi.from_dlpack(operand_copy(x), require_alignment=TENSOR_ALIGN, require_contiguous=True)


#: What each kernel's assembly showed so far in this process (code id, hot loop or why none), by the schedule's
#: structural hash and the target.
_ASM_FACTS: dict[tuple[int, str], tuple[str, HotLoop | str]] = {}


@dataclasses.dataclass
class CompiledKernel:
    """A compiled matmul with the packed function fetched once.

    Calling it runs the kernel on TVM tensors; nothing but the native call
    happens inside, so it can be timed directly.
    """

    variant: str
    shape: MatmulShape
    dtype: str
    layout: str
    facts: HostFacts
    executable: Any
    tir: tvm.IRModule
    #: B as the kernel reads it, from the caller's B (re-laid where the kernel takes B pre-packed, ``b_constant``),
    #: applied by :meth:`tensors` once, outside any timed call; None: the kernel reads B as given.
    relayout_b: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.func = self.executable["main"]
        self.device = tvm.cpu(0)

    def __call__(self, a: tvm.runtime.Tensor, b: tvm.runtime.Tensor, c: tvm.runtime.Tensor) -> None:
        self.func(a, b, c)

    @property
    def b_shape(self) -> tuple[int, int]:
        return b_shape(self.shape, self.layout)

    def tensors(self, a: np.ndarray, b: np.ndarray) -> tuple[Any, Any, Any]:
        """Device tensors for A, B and a C full of garbage (NaN), after checking shapes.

        C starts as garbage, never zeros, so a kernel that forgets to zero
        its accumulator (C += A @ B) cannot pass a check by luck.
        """
        self.facts.check_runs_here()
        want = {"A": (self.shape.M, self.shape.K), "B": self.b_shape}
        for name, arr in (("A", a), ("B", b)):
            if arr.shape != want[name] or arr.dtype != np.dtype(self.dtype):
                raise ValueError(
                    f"{name} must be a {want[name]} {self.dtype} array for {self.shape} ({self.layout}), "
                    f"got {arr.shape} {arr.dtype}"
                )
        c = garbage((self.shape.M, self.shape.N), self.dtype)
        if self.relayout_b is not None:  # B a constant the kernel reads re-laid: packed once here, never when timed
            b = self.relayout_b(b)
        return host_tensor(a), host_tensor(b), host_tensor(c)

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Run once on host arrays and return C."""
        ta, tb, tc = self.tensors(a, b)
        self(ta, tb, tc)
        return tc.numpy()

    def evaluator(self, *, number: int = 10, repeat: int = 5, min_repeat_ms: int = 0):
        """TVM's own native timer for this kernel: call it with (A, B, C) tensors."""
        return self.executable.mod.time_evaluator(
            "main", self.device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
        )

    def time_evaluator(self, *, number: int = 10, repeat: int = 5, min_repeat_ms: int = 0) -> list[float]:
        """Seconds per call for each repeat, measured by TVM's own native timer."""
        rng = np.random.default_rng(0)
        a = rng.random((self.shape.M, self.shape.K)).astype(self.dtype)
        b = rng.random(self.b_shape).astype(self.dtype)
        ev = self.evaluator(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
        return [float(x) for x in ev(*self.tensors(a, b)).results]

    def _asm_facts(self, asm: str | None = None) -> tuple[str, HotLoop | str]:
        """(code id, hot loop or why none), read once per schedule and target in a process; ``asm``: this
        kernel's assembly where the caller printed it already."""
        key = (tvm_ffi.structural_hash(self.tir), str(self.facts.target()))
        if key not in _ASM_FACTS:
            asm = asm if asm is not None else self.source("asm")
            try:
                loop: HotLoop | str = hot_loop(asm, arch=self.facts.arch)
            except AsmError as e:
                loop = str(e)  # the message, not the exception: a raised one keeps its frames alive
            _ASM_FACTS[key] = (hashlib.sha256(asm.encode()).hexdigest()[:16], loop)
        return _ASM_FACTS[key]

    def code_id(self) -> str:
        """A digest of the kernel's assembly: two runs whose kernels share it ran the same machine code, so a
        change between them is not the code's (the report does not call it a regression)."""
        return self._asm_facts()[0]

    def hot_loop(self, asm: str | None = None) -> HotLoop:
        """What the kernel's innermost FMA loop does per iteration: FMAs, loads, stores, stack reloads.

        Read once per schedule and target in a process (the assembly takes most of a second to print), so a
        second build of the same code (an A/A copy, ``ml_guided`` keeping the rules' config) costs nothing;
        ``asm``, this kernel's :meth:`source`, saves printing it where the caller has it.

        Raises
        ------
        AsmError
            No loop of packed FMAs (a scalar kernel).
        """
        found = self._asm_facts(asm)[1]
        if isinstance(found, str):
            raise AsmError(found)
        return found

    def source(self, kind: str = "asm") -> str:
        """Show the code: scheduled ``tir`` (TVMScript), LLVM IR ``ll`` or ``asm``."""
        if kind == "tir":
            return self.tir.script()
        if kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {kind!r}; choose one of: {', '.join(SOURCE_KINDS)}")
        return self.executable.mod.inspect_source(kind)


def build(
    variant: str,
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    b_constant: bool | None = None,
) -> CompiledKernel:
    """Schedule a variant and compile it for ``facts.target()`` (default: host). ``b_constant``: B is a weight
    packed once by the caller (see :func:`~matmul.core.registry.schedule`); :meth:`CompiledKernel.tensors`
    then re-lays it."""
    facts = facts or host_facts()
    sch = schedule(variant, shape, dtype=dtype, layout=layout, facts=facts, b_constant=b_constant)
    exe = compile_module(sch, facts.target())
    relayout = functools.partial(relayout_b, variant, shape, dtype=dtype, layout=layout, facts=facts,
                                 b_constant=b_constant)
    return CompiledKernel(variant, shape, dtype, layout, facts, exe, sch.mod, relayout)


@dataclasses.dataclass
class CudaKernel:
    """A matmul built for a CUDA target: shown anywhere, run and timed only where a GPU is present.

    It has the interface :func:`~matmul.core.verify.verify` uses (``tensors``, call), so a GPU build is checked
    against NumPy exactly as a CPU one is; without a GPU, ``tensors`` raises a ``HardwareError`` that says so.
    """

    variant: str
    shape: MatmulShape
    dtype: str
    layout: str
    build: CudaBuild

    @property
    def spec(self) -> GpuSpec:
        return self.build.spec

    @property
    def tir(self) -> tvm.IRModule:
        return self.build.tir

    @property
    def b_shape(self) -> tuple[int, int]:
        return b_shape(self.shape, self.layout)

    def source(self, kind: str = "cuda") -> str:
        """The scheduled ``tir``, the generated ``cuda`` C source, or ``ptx`` (NVRTC, from the ``cuda`` extra)."""
        if kind not in CUDA_SOURCE_KINDS:
            raise ValueError(f"unknown source kind {kind!r} for a CUDA build; choose one of: {', '.join(CUDA_SOURCE_KINDS)}")
        return {"tir": lambda: self.tir.script(), "cuda": lambda: self.build.source, "ptx": self.build.ptx}[kind]()

    def figures(self) -> dict[str, dict[str, int]]:
        """Registers, shared memory, spills per kernel, from ``ptxas -v``."""
        return self.build.figures()

    def device(self):
        if not gpu_present():
            raise HardwareError(f"{self.variant} was built for {self.spec.arch} but this machine has no CUDA GPU "
                                "(tvm.cuda(0).exist is False): show its source or PTX, run it on a GPU host")
        return tvm.cuda(0)

    def tensors(self, a: np.ndarray, b: np.ndarray) -> tuple[Any, Any, Any]:
        """A, B and a garbage-filled C on the GPU, after checking shapes."""
        dev = self.device()
        want = {"A": (self.shape.M, self.shape.K), "B": self.b_shape}
        for name, arr in (("A", a), ("B", b)):
            if arr.shape != want[name] or arr.dtype != np.dtype(self.dtype):
                raise ValueError(f"{name} must be a {want[name]} {self.dtype} array for {self.shape} ({self.layout}), "
                                 f"got {arr.shape} {arr.dtype}")
        c = garbage((self.shape.M, self.shape.N), accumulator_dtype(self.dtype))
        return tuple(tvm.runtime.tensor(x, dev) for x in (a, b, c))

    def __call__(self, a, b, c) -> None:
        self.build.executable["main"](a, b, c)

    def evaluator(self, *, number: int = 10, repeat: int = 5, min_repeat_ms: int = 0):
        """TVM's timer on the GPU (it synchronizes the device around each repeat)."""
        return self.build.executable.mod.time_evaluator("main", self.device(), number=number, repeat=repeat,
                                                        min_repeat_ms=min_repeat_ms)


def build_gpu(variant: str, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN",
              arch: str | None = None) -> CudaKernel:
    """Schedule a ``cuda`` variant and compile it for ``arch`` (default: this machine's GPU, else sm_80)."""
    if get_variant(variant).target != "cuda":
        raise ValueError(f"variant {variant!r} is a CPU variant; CUDA variants: "
                         f"{', '.join(variant_names(target='cuda'))}")
    spec = gpu_spec(arch)
    sch = schedule(variant, shape, dtype=dtype, layout=layout, gpu=spec)
    return CudaKernel(variant, shape, dtype, layout, build_cuda(sch.mod, spec))


@functools.lru_cache(maxsize=256)
def build_cached(variant: str, shape: MatmulShape, dtype: str = "float32", layout: str = "NN") -> CompiledKernel:
    """:func:`build` for the host, memoised per process (tests and sweeps reuse builds)."""
    return build(variant, shape, dtype=dtype, layout=layout)


# --------------------------------------------------------------------------- code inspection
def vector_fma_pattern(facts: HostFacts) -> re.Pattern[str]:
    """Regex matching a packed fp32 FMA at the target's full SIMD width in assembly."""
    return fma_pattern(facts.arch, facts.simd_lanes_fp32)


def count_vector_fma(asm: str, facts: HostFacts) -> int:
    """How many full-width packed fp32 FMA instructions the assembly holds."""
    return len(vector_fma_pattern(facts).findall(asm))
