"""The CUDA target: what GPU a build is for, building to CUDA source and PTX, ptxas's figures, and whether a GPU is here.

Everything here works on a machine without a GPU. ``tvm.compile`` for a CUDA target only generates CUDA C
source; turning it into PTX needs NVRTC (the ``cuda-bindings`` and ``nvidia-cuda-nvrtc`` packages), and
assembling PTX, which reports registers and shared memory per thread block, needs ``ptxas`` (the
``nvidia-cuda-nvcc`` package). Those come from the project's ``cuda`` extra, found in this Python environment;
an ``nvcc`` that happens to be on the ``PATH`` is never used. Loading and running a module needs the CUDA driver
and a GPU: :func:`gpu_present` says whether this machine has one.

A :class:`GpuSpec` holds what schedules read about the GPU: the architecture, the streaming multiprocessor
count, the per-block limits. On a GPU host they are read from the device; otherwise they are the nominal
figures of the part each architecture names (A100 for sm_80, H100 SXM for sm_90), and ``source`` says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tvm

from .kernel import GPU_DTYPES, check_dtype

#: The architectures every GPU variant is built and checked for. Async copies (``cp.async``) need sm_80 or newer.
ARCHS: tuple[str, ...] = ("sm_80", "sm_90")
DEFAULT_ARCH = "sm_80"
#: Static ``__shared__`` memory a thread block may declare on every architecture (more needs dynamic shared memory).
STATIC_SHARED_BYTES = 48 * 1024
#: How to get the tools this module needs.
INSTALL_HINT = "pip install -e '.[cuda]'"
#: PassContext options of every CUDA build: copies inside an asynchronous pipeline stage become ``cp.async``.
BUILD_CONFIG = {"tirx.use_async_copy": True}

# Nominal parts: (name, SMs, FP32 TFLOP/s, dense FP16 tensor-core TFLOP/s with FP32 accumulation).
_NOMINAL = {
    "sm_80": ("A100 SXM (nominal)", 108, 19.5, 312.0),
    "sm_90": ("H100 SXM (nominal)", 132, 67.0, 989.0),
}


class GpuToolError(RuntimeError):
    """A tool of the ``cuda`` extra (NVRTC, ptxas) is missing or failed; the message says which and what to do."""


def check_arch(arch: str) -> str:
    """``sm_80`` and newer (``sm_XY``); anything else is a ``ValueError`` naming the choices."""
    m = re.fullmatch(r"sm_(\d{2,3})", str(arch))
    if not m or int(m[1]) < 80:
        raise ValueError(f"unsupported CUDA arch {arch!r}; choose sm_80 or newer, for example: {', '.join(ARCHS)}")
    return arch


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """The GPU a build is for."""

    arch: str = DEFAULT_ARCH
    name: str = ""
    sm_count: int = 0
    max_threads_per_block: int = 1024
    max_shared_memory_per_block: int = STATIC_SHARED_BYTES
    registers_per_block: int = 65536
    warp_size: int = 32
    #: Peak TFLOP/s: FP32 on CUDA cores, FP16 on tensor cores; 0 where unknown.
    peak_fp32_tflops: float = 0.0
    peak_fp16_tflops: float = 0.0
    #: ``device`` (read from the GPU here) or ``nominal`` (the part the arch names).
    source: str = "nominal"

    def target(self) -> tvm.target.Target:
        """The TVM CUDA target, with the per-block limits the schedules and dlight read."""
        return tvm.target.Target({
            "kind": "cuda",
            "arch": self.arch,
            "max_threads_per_block": self.max_threads_per_block,
            "max_shared_memory_per_block": self.max_shared_memory_per_block,
            "thread_warp_size": self.warp_size,
            "registers_per_block": self.registers_per_block,
        })

    def peak_tflops(self, dtype: str) -> float:
        return self.peak_fp16_tflops if check_dtype(dtype, GPU_DTYPES) == "float16" else self.peak_fp32_tflops

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def nominal_spec(arch: str = DEFAULT_ARCH) -> GpuSpec:
    """The spec of the part ``arch`` names (an unnamed newer arch gets the sm_90 part's figures)."""
    check_arch(arch)
    name, sms, fp32, fp16 = _NOMINAL.get(arch, _NOMINAL["sm_90"])
    return GpuSpec(arch, name, sms, peak_fp32_tflops=fp32, peak_fp16_tflops=fp16)


def gpu_present() -> bool:
    """True when the CUDA runtime is built in, the driver loads and device 0 exists."""
    try:
        return bool(tvm.runtime.enabled("cuda") and tvm.cuda(0).exist)
    except Exception:  # no driver: loading libcuda fails inside the check
        return False


def gpu_spec(arch: str | None = None) -> GpuSpec:
    """The spec for a build: read from the GPU when one is here and ``arch`` is None or its own, else nominal."""
    if gpu_present():
        dev = tvm.cuda(0)
        own = "sm_" + str(dev.compute_version).replace(".", "")
        if arch in (None, own):
            base = nominal_spec(own) if int(own[3:]) >= 80 else GpuSpec(own)
            return dataclasses.replace(
                base, name=str(dev.device_name), sm_count=int(dev.multi_processor_count),
                max_threads_per_block=int(dev.max_threads_per_block), warp_size=int(dev.warp_size),
                max_shared_memory_per_block=min(STATIC_SHARED_BYTES, int(dev.max_shared_memory_per_block)),
                source="device")
    return nominal_spec(arch or DEFAULT_ARCH)


# --------------------------------------------------------------------------- the cuda extra's tools
def toolkit_root() -> Path | None:
    """The CUDA toolkit the ``cuda`` extra installed in this environment (``site-packages/nvidia/cu13``), or None."""
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for sub in sorted(Path(base).glob("cu[0-9]*"), reverse=True):
            if (sub / "include" / "cuda_runtime.h").is_file():
                return sub
    return None


def _need_toolkit(what: str) -> Path:
    root = toolkit_root()
    if root is None:
        raise GpuToolError(f"{what} needs the CUDA toolkit packages of the cuda extra; install them: {INSTALL_HINT}")
    return root


@contextlib.contextmanager
def _cuda_path(root: Path) -> Iterator[None]:
    """TVM's NVRTC wrapper finds headers under ``$CUDA_PATH``; point it at the extra's toolkit for one call."""
    old = os.environ.get("CUDA_PATH")
    os.environ["CUDA_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_PATH", None)
        else:
            os.environ["CUDA_PATH"] = old


def compile_ptx(source: str, arch: str = DEFAULT_ARCH) -> str:
    """CUDA C source to PTX with NVRTC.

    Raises
    ------
    GpuToolError
        The ``cuda`` extra is not installed, or NVRTC rejected the source (its log is in the message).
    """
    check_arch(arch)
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        raise GpuToolError(f"PTX needs NVRTC from the cuda-bindings package; install the cuda extra: {INSTALL_HINT}")
    root = _need_toolkit("PTX")
    from tvm.support import nvcc

    options = [f"-I{root / 'include'}"] + [f"-I{p}" for p in (root / "include" / "cccl",) if p.is_dir()]
    try:
        with _cuda_path(root), tvm.target.Target({"kind": "cuda", "arch": arch}):
            ptx = nvcc.compile_cuda(source, target_format="ptx", arch=arch, options=options)
    except RuntimeError as err:
        raise GpuToolError(f"NVRTC could not compile the kernel for {arch}: {err}") from err
    return bytes(ptx).rstrip(b"\0").decode()


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_figures(ptx: str, arch: str = DEFAULT_ARCH) -> dict[str, dict[str, int]]:
    """Assemble PTX with ``ptxas -v``; per kernel: registers per thread, shared memory per block, spills, stack.

    Raises
    ------
    GpuToolError
        ptxas is not installed (the ``cuda`` extra), or it rejected the PTX (its message is kept).
    """
    check_arch(arch)
    ptxas = _need_toolkit("ptxas") / "bin" / "ptxas"
    if not ptxas.is_file():
        raise GpuToolError(f"ptxas is not in {ptxas.parent}; install the cuda extra: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="matmul-ptx-") as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        proc = subprocess.run([str(ptxas), "-v", "--gpu-name", arch, "-o", os.devnull, str(path)],
                              capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise GpuToolError(f"ptxas rejected the PTX for {arch}: {(proc.stderr or proc.stdout).strip()}")
    out: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := _PTXAS_ENTRY.search(line):
            current = out.setdefault(m["name"], {"registers": 0, "shared_bytes": 0, "spill_stores": 0,
                                                  "spill_loads": 0, "stack_bytes": 0})
        elif current is not None and (m := _PTXAS_FRAME.search(line)):
            current.update(stack_bytes=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _PTXAS_USED.search(line)):
            current.update(registers=int(m[1]), shared_bytes=int(m[2] or 0))
    if not out:
        raise GpuToolError(f"ptxas reported no kernel for {arch}: {(proc.stdout + proc.stderr).strip()}")
    return out


# --------------------------------------------------------------------------- builds
@dataclasses.dataclass
class CudaBuild:
    """A scheduled kernel compiled for a CUDA target: its source now, PTX and ptxas figures on demand."""

    spec: GpuSpec
    tir: tvm.IRModule
    executable: Any

    @property
    def source(self) -> str:
        """The CUDA C source TVM generated (host code is LLVM; the device module is the first import)."""
        return self.executable.mod.imports[0].inspect_source()

    def ptx(self) -> str:
        return compile_ptx(self.source, self.spec.arch)

    def figures(self) -> dict[str, dict[str, int]]:
        """:func:`ptxas_figures` of this build's PTX."""
        return ptxas_figures(self.ptx(), self.spec.arch)


def build_cuda(mod: tvm.IRModule, spec: GpuSpec) -> CudaBuild:
    """``tvm.compile`` a scheduled module for ``spec``'s target (no GPU and no CUDA compiler needed)."""
    with tvm.transform.PassContext(config=BUILD_CONFIG):
        exe = tvm.compile(mod, target=spec.target())
    return CudaBuild(spec, mod, exe)
