"""Benchmark each (kernel, M, variant, layout) case, after proving it correct."""

from __future__ import annotations

import time

from matmul import build_cached, make_inputs, verify

# verify() runs NumPy's reference on OpenBLAS, whose threads keep spinning
# after the call and take cores from TVM's pool: on the 2-core dev box the
# median of qkv-M16-full rose from 1.07 ms to 1.8-2.2 ms right after a
# reference, and was back to ~1.1 ms after 100-200 ms of quiet.
BLAS_SETTLE_S = 0.2


def test_matmul(benchmark, workload, variant, layout):
    shape = workload.shape
    kernel = build_cached(variant, shape, "float32", layout)
    verify(kernel)  # a wrong kernel fails here and never gets a figure
    ta, tb, tc = kernel.tensors(*make_inputs(shape, layout=layout))
    func = kernel.func  # fetched once, outside the timed call
    # kernel, M, variant and layout are saved as params already
    benchmark.extra_info.update(model=workload.model, K=shape.K, N=shape.N)
    time.sleep(BLAS_SETTLE_S)
    benchmark.pedantic(func, args=(ta, tb, tc), warmup_rounds=3, rounds=20, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = shape.flops / benchmark.stats.stats.median / 1e9
