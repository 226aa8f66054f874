"""Benchmark each (kernel, M, variant, layout) case, after proving it correct.

Every case builds once and checks its output against the float64 NumPy
reference (a wrong kernel fails here and never gets a figure).

By default the cases of one shape and layout are then timed together, in
interleaved rounds of mirrored order, beside an A/A copy of one TVM case
(see :mod:`matmul.measure.grid`); each case hands its own samples to
pytest-benchmark, so saving, comparing and histograms work unchanged. Each
saved case carries in ``extra_info``: its raw samples (``samples_s``), its
ratio to the group's anchor with a bootstrap interval (``to_anchor``),
whether the group stayed ``inconclusive``, the group's A/A ratio and
``noise_floor``, GFLOP/s and its IQR, percent of the FP32 peak (``pct_peak``, with
``pct_peak_ci``, against the peak probe timed in the group's own rounds;
``pct_peak_run`` against the peak measured once for the run), the
schedule's decisions and promoted keys (for ``ml_guided``: ``fallback``),
the speedup over NumPy timed in the same rounds, and an agreement figure
(TVM's own ``time_evaluator`` sampled right after each block; for
``numpy``, NumPy alone in a fresh process before and after the rounds).

With ``--no-interleave`` each case is timed on its own, one after another:
3 warm-up rounds, then ``--rounds`` single-call rounds, NumPy measured right
before and after it.
"""

from __future__ import annotations

import statistics

import pytest

from matmul.core.registry import Unavailable
from matmul.core.tables import geomean
from matmul.core.verify import make_inputs
from matmul.measure.bandwidth import bytes_moved, read_bandwidth, roofline
from matmul.measure.candidates import prepare
from matmul.measure.interleave import replay_timer
from matmul.measure.peak import fp32_peak
from matmul.measure.references import get_reference, numpy_alone
from matmul.measure.timing import median_seconds, wait_for_quiet

WARMUP_ROUNDS = 3


def _numpy_median(shape, layout, threads: int) -> float:
    """NumPy's median for this shape, measured here and now (after a quiet spell)."""
    ref = get_reference("numpy")
    call, _ = ref.prepare(*make_inputs(shape, layout=layout), layout, threads)
    with ref.threads(threads):
        return median_seconds(call)


def test_matmul(benchmark, workload, variant, layout, bench_settings, grid_timer, request):
    shape = workload.shape
    rounds = bench_settings["rounds"]
    peak = fp32_peak()
    info = benchmark.extra_info
    # kernel, M, variant and layout are saved as params already
    info.update(model=workload.model, K=shape.K, N=shape.N, peak_gflops=peak.gflops, peak_method=peak.method)
    timed = benchmark.enabled
    if timed and bench_settings["interleave"]:  # the group builds and verifies every case, this one included
        _timed_in_group(benchmark, grid_timer.group(request.session, workload, layout), variant, shape, peak)
        return
    try:
        cand = prepare(variant, shape, layout=layout)  # raises on a wrong result
    except Unavailable as err:  # the family cannot serve this case after all (e.g. every record failed)
        pytest.skip(str(err))
    info.update(cand.describe())  # with the keys a family promotes, e.g. ml_guided's fallback (None, or why)
    info.update(interleaved=False)
    # The independent timer for agreement. TVM kernels: one native
    # time_evaluator call before every round, interleaved with
    # pytest-benchmark's own calls, so drift on a shared machine hits both
    # alike. numpy: NumPy alone in a fresh process, before and after the
    # rounds (A-B-A).
    native: list[float] = []
    setup = None
    if timed and cand.kind == "tvm":
        sample = cand.native_timer()

        def setup():
            native.append(sample())

    alone_before = _numpy_alone(cand, rounds) if timed and variant == "numpy" else None
    numpy_before = _numpy_median(shape, layout, cand.threads) if timed and variant != "numpy" else None
    with cand.pool():
        settle = wait_for_quiet()
        benchmark.pedantic(cand.call, setup=setup, warmup_rounds=WARMUP_ROUNDS, rounds=rounds, iterations=1)
    info.update(settle_s=settle.seconds, quiet=settle.quiet)
    if not timed:  # --benchmark-disable: verified, not timed
        return
    median = _rates(info, benchmark.stats.stats, shape, peak.gflops)
    if numpy_before is not None:
        numpy_s = geomean([numpy_before, _numpy_median(shape, layout, cand.threads)])
        info.update(numpy_median_s=numpy_s, speedup_vs_numpy=numpy_s / median)
    if native:
        other = statistics.median(native[-rounds:])  # the samples taken beside the timed rounds
        info.update(agreement_check="time_evaluator", agreement_median_s=other, agreement=median / other)
    elif alone_before is not None:
        other = geomean([alone_before, _numpy_alone(cand, rounds)])
        info.update(agreement_check="numpy_alone", agreement_median_s=other, agreement=median / other)


def _numpy_alone(cand, rounds: int) -> float:
    """NumPy timed alone, in a fresh process that loads nothing else."""
    wait_for_quiet()  # our own BLAS threads must not spin beside the child
    return numpy_alone([cand.shape], layout=cand.layout, threads=cand.threads, calls=rounds)[cand.shape]


def _rates(info: dict, stats, shape, peak_gflops: float) -> float:
    """GFLOP/s, its IQR, percent of ``peak_gflops`` and the roofline limit (compute or memory, with the read
    bandwidth measured at the shape's working set) from pytest-benchmark's stats, into ``info``; returns the
    median."""
    median = stats.median
    info.update(
        gflops=shape.flops / median / 1e9,
        gflops_iqr=shape.flops / stats.q1 / 1e9 - shape.flops / stats.q3 / 1e9,
        pct_peak=100 * shape.flops / median / 1e9 / peak_gflops,
    )
    info.update(roofline(shape, median, peak_gflops, read_bandwidth(bytes_moved(shape))).as_dict())
    return median


def _timed_in_group(benchmark, group, variant: str, shape, peak) -> None:
    """This case's figures from its group's interleaved rounds (see matmul.measure.grid)."""
    try:
        case = group.case(variant)
    except Unavailable as err:
        pytest.skip(str(err))
    info = benchmark.extra_info
    info.update(case.described)
    info.update(group.summary())
    info.update(samples_s=case.samples, calls_per_sample=case.calls)
    if case.by_process is not None:  # timed in several processes (--processes): the best time of each
        info.update(process_best_s=case.by_process, process_spread=case.process_spread)
    if group.peak is not None:  # the FMA probe's samples from the same rounds: report --normalize peak
        info.update(peak_samples_s=group.peak.samples, peak_probe_flops=group.probe_flops)
    if case.to_anchor is not None:
        info.update(to_anchor=case.to_anchor.as_dict())
    benchmark._timer = replay_timer(case.samples)
    benchmark.pedantic(lambda: None, rounds=len(case.samples), warmup_rounds=0, iterations=1)
    # The peak probe timed in the same rounds sets percent of peak and the compute ceiling: the clock it ran at
    # is this case's. The run's once-measured peak stays in peak_gflops, its percent in pct_peak_run.
    median = _rates(info, benchmark.stats.stats, shape, group.peak_gflops or peak.gflops)
    info.update(pct_peak_run=100 * shape.flops / median / 1e9 / peak.gflops)
    pct = case.pct_peak(shape.flops, group.probe_flops)
    if pct is not None:
        info.update(pct_peak_ci=[pct.lo, pct.hi])
    info.update(best_s=case.best_s)
    if case.vs_numpy is not None:
        best = case.vs_numpy_best
        info.update(numpy_median_s=group.cases["numpy"].median_s, speedup_vs_numpy=case.vs_numpy.value,
                    speedup_vs_numpy_ci=[case.vs_numpy.lo, case.vs_numpy.hi], numpy_best_s=group.cases["numpy"].best_s,
                    speedup_vs_numpy_best=best.value, speedup_vs_numpy_best_ci=[best.lo, best.hi])
    if case.agreement_median_s:
        info.update(agreement_check=case.agreement_check, agreement_median_s=case.agreement_median_s,
                    agreement=median / case.agreement_median_s)
