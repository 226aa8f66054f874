"""Benchmark each (kernel, M, variant, layout) case, after proving it correct."""

from __future__ import annotations

from matmul import build_cached, make_inputs, verify


def test_matmul(benchmark, workload, variant, layout):
    shape = workload.shape
    kernel = build_cached(variant, shape, "float32", layout)
    verify(kernel)  # a wrong kernel fails here and never gets a figure
    ta, tb, tc = kernel.tensors(*make_inputs(shape, layout=layout))
    func = kernel.func  # fetched once, outside the timed call
    benchmark.extra_info.update(kernel=workload.kernel, M=shape.M, K=shape.K, N=shape.N, variant=variant, layout=layout)
    benchmark.pedantic(func, args=(ta, tb, tc), warmup_rounds=3, rounds=20, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = shape.flops / benchmark.stats.stats.median / 1e9
