"""Timing on a GPU: the suite's CUDA kernels and cuBLAS (through ``torch.cuda``) as the vendor reference.

Nothing here runs without a GPU; :func:`gpu_unavailable` says why a case cannot be timed, and the bench grid
skips it with that reason. Every case is checked against NumPy before it is timed (a wrong kernel never gets a
figure). Two times are kept per case: the wall time of one launch followed by a device synchronization (what
pytest-benchmark records), and TVM's device-side ``time_evaluator`` mean over many back-to-back launches (the
figure GFLOP/s and the percent of the GPU's peak are computed from, since a launch and a sync cost a few
microseconds that a 20-microsecond kernel should not be charged with).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.gpu import gpu_present
from ..core.kernel import accumulator_dtype
from ..core.runner import CudaKernel, build_gpu
from ..core.verify import check_calls, make_inputs
from ..core.workloads import MatmulShape

#: The vendor reference's name in the GPU grid.
CUBLAS = "cublas"


def gpu_unavailable() -> str | None:
    """Why nothing can be timed on a GPU here, or None."""
    if gpu_present():
        return None
    return ("no CUDA GPU on this machine (tvm.cuda(0).exist is False): the GPU variants are built and inspected "
            "without one by `pytest tests/test_cuda.py` and `python -m matmul show --target cuda`")


def cublas_unavailable() -> str | None:
    """Why cuBLAS cannot be timed here (no GPU, no PyTorch, or a CPU-only PyTorch build), or None."""
    if (reason := gpu_unavailable()) is not None:
        return reason
    try:
        import torch
    except ImportError as err:
        return f"cuBLAS is timed through PyTorch, which is not installed ({err}); pip install -e '.[torch]'"
    if not torch.cuda.is_available():
        return f"this PyTorch ({torch.__version__}) has no CUDA; install a CUDA build of torch to time cuBLAS"
    return None


@dataclasses.dataclass
class GpuCase:
    """One verified case ready to time: ``launch()`` queues one call, ``sync()`` waits for the device."""

    name: str
    shape: MatmulShape
    dtype: str
    layout: str
    launch: Callable[[], None]
    sync: Callable[[], None]
    #: Seconds per call measured on the device (back-to-back launches), or None where no such timer exists.
    device_seconds: Callable[[], float] | None
    info: dict[str, Any]

    def call(self) -> None:
        self.launch()
        self.sync()


def tvm_case(variant: str, shape: MatmulShape, *, dtype: str, layout: str, arch: str | None = None) -> GpuCase:
    """Build a GPU variant, check it against NumPy twice on a garbage C, and return it ready to time."""
    kernel: CudaKernel = build_gpu(variant, shape, dtype=dtype, layout=layout, arch=arch)
    a, b = make_inputs(shape, dtype=dtype, layout=layout)
    ta, tb, tc = kernel.tensors(a, b)
    check_calls(lambda: kernel(ta, tb, tc), tc.numpy, a, b, layout=layout, what=f"{variant} on {shape} ({dtype}, {layout})")
    dev = kernel.device()

    # About 10 ms of launches per repeat, guessing 10 TFLOP/s; the median of 5 repeats.
    number = max(1, min(1000, int(1e-2 * 1e13 / shape.flops)))

    def device_seconds() -> float:
        return float(np.median(kernel.evaluator(number=number, repeat=5)(ta, tb, tc).results))

    info = {"arch": kernel.spec.arch, "gpu": kernel.spec.name, "sms": kernel.spec.sm_count,
            "peak_tflops": kernel.spec.peak_tflops(dtype), "peak_source": kernel.spec.source,
            "out_dtype": accumulator_dtype(dtype)}
    return GpuCase(variant, shape, dtype, layout, lambda: kernel(ta, tb, tc), dev.sync, device_seconds, info)


def cublas_case(shape: MatmulShape, *, dtype: str, layout: str) -> GpuCase:
    """``torch.matmul`` on the GPU: float32 without TF32, float16 with float32 accumulation and a float16 C
    (cuBLAS's usual half GEMM; the suite's own kernels store float32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    a, b = make_inputs(shape, dtype=dtype, layout=layout)
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    rhs = tb if layout == "NN" else tb.T
    out = torch.full((shape.M, shape.N), float("nan"), dtype=ta.dtype, device="cuda")

    def launch() -> None:
        torch.matmul(ta, rhs, out=out)

    check_calls(lambda: (launch(), torch.cuda.synchronize()), lambda: out.cpu().numpy(), a, b, layout=layout,
                what=f"cuBLAS on {shape} ({dtype}, {layout})")
    info = {"gpu": torch.cuda.get_device_name(0), "out_dtype": dtype, "torch": torch.__version__}
    return GpuCase(CUBLAS, shape, dtype, layout, launch, torch.cuda.synchronize, None, info)
