"""The GPU grid (``pytest bench/ --target cuda``): kernel x M x GPU variant x dtype x layout, with cuBLAS.

Each case is built for this machine's GPU, checked against NumPy twice on a garbage C, then timed: 5 warm-up
rounds and ``--rounds`` rounds of one launch plus a device synchronization (pytest-benchmark's figure), and
TVM's device-side timer over back-to-back launches (``device_median_s``, from which ``gflops`` and
``pct_peak`` are computed against the GPU's peak for the dtype: FP32 CUDA cores or FP16 tensor cores).
``to_cublas`` is cuBLAS's wall median over this case's, both timed in this session.

Without a GPU every case is skipped with the reason; the variants are still built and inspected by
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations


from matmul.measure.gpu import CUBLAS, cublas_case, tvm_case

WARMUP_ROUNDS = 5
_CUBLAS_MEDIANS: dict[tuple, float] = {}


def test_gpu_matmul(benchmark, workload, gpu_variant, dtype, layout, bench_settings, request):
    shape = workload.shape
    arch = request.config.getoption("--arch")
    case = (cublas_case(shape, dtype=dtype, layout=layout) if gpu_variant == CUBLAS
            else tvm_case(gpu_variant, shape, dtype=dtype, layout=layout, arch=arch))
    info = benchmark.extra_info
    info.update(model=workload.model, K=shape.K, N=shape.N, target="cuda", **case.info)
    if not benchmark.enabled:  # --benchmark-disable: verified, not timed
        return
    benchmark.pedantic(case.call, warmup_rounds=WARMUP_ROUNDS, rounds=bench_settings["rounds"], iterations=1)
    wall = benchmark.stats.stats.median
    info.update(wall_gflops=shape.flops / wall / 1e9)
    key = (workload.kernel, workload.M, dtype, layout)
    if gpu_variant == CUBLAS:
        _CUBLAS_MEDIANS[key] = wall
    elif key in _CUBLAS_MEDIANS:
        info.update(to_cublas=_CUBLAS_MEDIANS[key] / wall)
    if case.device_seconds is not None:
        device = case.device_seconds()
        info.update(device_median_s=device, gflops=shape.flops / device / 1e9)
        if info.get("peak_tflops"):
            info.update(pct_peak=100 * shape.flops / device / 1e12 / info["peak_tflops"])
