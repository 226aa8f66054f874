"""Benchmark each (kernel, M, variant, layout) case, after proving it correct.

Every case builds once, checks its output against the float64 NumPy
reference (a wrong kernel fails here and never gets a figure), waits until
no other thread pool of the process still spins, and only then is timed by
pytest-benchmark: 3 warm-up rounds, then ``--rounds`` single-call rounds.

Each saved case carries in ``extra_info``: GFLOP/s and its IQR, percent of
the measured FP32 peak, the schedule's decisions, NumPy's median for the same
shape measured in this session and the speedup over it, and an agreement
figure: TVM's own ``time_evaluator`` on the same kernel, or, for ``numpy``,
NumPy timed alone in a fresh process.
"""

from __future__ import annotations

import math
import statistics

from matmul.candidates import prepare
from matmul.peak import fp32_peak
from matmul.references import get_reference, numpy_alone
from matmul.timing import median_seconds, wait_for_quiet
from matmul.verify import make_inputs

WARMUP_ROUNDS = 3


def _numpy_median(shape, layout, threads: int) -> float:
    """NumPy's median for this shape, measured here and now (after a quiet spell)."""
    ref = get_reference("numpy")
    call, _ = ref.prepare(*make_inputs(shape, layout=layout), layout, threads)
    with ref.threads(threads):
        return median_seconds(call)


def _geomean(a: float, b: float) -> float:
    return math.sqrt(a * b)


def test_matmul(benchmark, workload, variant, layout, bench_settings):
    shape = workload.shape
    rounds = bench_settings["rounds"]
    cand = prepare(variant, shape, layout=layout)  # raises on a wrong result
    peak = fp32_peak()
    info = benchmark.extra_info
    # kernel, M, variant and layout are saved as params already
    info.update(model=workload.model, K=shape.K, N=shape.N, kind=cand.kind, threads=cand.threads,
                decisions=cand.decisions, peak_gflops=peak.gflops, peak_method=peak.method)
    timed = benchmark.enabled
    # Cross-checks bracket the timed rounds (A-B-A), so drift on a shared
    # machine moves both sides of each ratio alike.
    before = _cross_check(cand, rounds) if timed else None
    numpy_before = _numpy_median(shape, layout, cand.threads) if timed and variant != "numpy" else None
    with cand.pool():
        settle = wait_for_quiet()
        benchmark.pedantic(cand.call, warmup_rounds=WARMUP_ROUNDS, rounds=rounds, iterations=1)
    info.update(settle_s=settle.seconds, quiet=settle.quiet)
    if not timed:  # --benchmark-disable: verified, not timed
        return
    stats = benchmark.stats.stats
    median = stats.median
    info.update(
        gflops=shape.flops / median / 1e9,
        gflops_iqr=shape.flops / stats.q1 / 1e9 - shape.flops / stats.q3 / 1e9,
        pct_peak=100 * shape.flops / median / 1e9 / peak.gflops,
    )
    if numpy_before is not None:
        numpy_s = _geomean(numpy_before, _numpy_median(shape, layout, cand.threads))
        info.update(numpy_median_s=numpy_s, speedup_vs_numpy=numpy_s / median)
    if before is not None:
        check, first = before
        other = _geomean(first, _cross_check(cand, rounds)[1])
        info.update(agreement_check=check, agreement_median_s=other, agreement=median / other)


def _cross_check(cand, rounds: int) -> tuple[str, float] | None:
    """The same kernel's median by an independent timer.

    TVM kernels: TVM's own ``time_evaluator`` (``rounds`` single calls, as
    pytest-benchmark does). ``numpy``: NumPy timed alone, in a fresh process
    that loads nothing else. Others: none.
    """
    if cand.kind == "tvm":
        wait_for_quiet()
        return "time_evaluator", statistics.median(cand.kernel.time_evaluator(number=1, repeat=rounds))
    if cand.name == "numpy":
        wait_for_quiet()  # our own BLAS threads must not spin beside the child
        alone = numpy_alone([cand.shape], layout=cand.layout, threads=cand.threads, calls=rounds)
        return "numpy_alone", alone[cand.shape]
    return None
