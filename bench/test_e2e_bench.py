"""Benchmark one Transformer encoder layer end to end per (model, seq, schedule), PyTorch eager beside it.

Every schedule of one layer is built, checked against the float64 NumPy layer, and timed together
with PyTorch in interleaved rounds beside an A/A copy of the first schedule (see
:mod:`matmul.e2e.timing`); each case hands its own samples to pytest-benchmark. ``extra_info`` holds
the samples, the speedups over PyTorch (and over ``none``, the unscheduled build, when it is timed)
with their intervals, the A/A noise floor, matmul GFLOP/s over the pass and percent of the FP32 peak
(``pct_peak`` and ``pct_peak_ci`` against the peak probe timed in the layer's rounds, ``pct_peak_run``
against the run's peak), what every PrimFunc got from the schedule pass, and the per-PrimFunc profile with the matmuls'
share of the time (from a separate instrumented run).
"""

from __future__ import annotations

import pytest

from matmul.core.hardware import host_facts
from matmul.core.registry import Unavailable
from matmul.e2e.layer import layer_spec
from matmul.e2e.profile import build_layer, check_layer, profile_layer
from matmul.e2e.timing import TORCH, case_info, layer_shape, torch_candidate
from matmul.measure.interleave import replay_timer
from matmul.measure.peak import fp32_peak

#: Instrumented forward passes behind each case's per-PrimFunc profile.
PROFILE_REPEAT = 5


def test_e2e(benchmark, e2e_model, seq, schedule, bench_settings, e2e_timer, request):
    spec = layer_spec(e2e_model, seq, bench_settings["e2e_batch"])
    peak = fp32_peak()
    info = benchmark.extra_info
    info.update(case_kind="e2e", model=spec.config.name, batch=spec.batch, tokens=spec.tokens,
                hidden=spec.config.hidden, intermediate=spec.config.intermediate, heads=spec.config.heads,
                matmul_flops=spec.matmul_flops(), peak_gflops=peak.gflops)
    if not benchmark.enabled:  # --benchmark-disable: built, checked against NumPy and run once, not timed
        if schedule == TORCH:
            try:
                call = torch_candidate(spec, layer_shape(spec), host_facts().runtime_threads).call
            except Unavailable as err:
                pytest.skip(str(err))
        else:
            built = build_layer(spec, schedule)
            check_layer(built)
            call = built.call
        benchmark.pedantic(call, rounds=1, iterations=1)
        return
    group, built = e2e_timer.group(request.session, spec)
    try:
        case = group.case(schedule)
    except Unavailable as err:
        pytest.skip(str(err))
    info.update(case_info(group, schedule))
    info.update(samples_s=case.samples, calls_per_sample=case.calls)
    if case.to_anchor is not None:
        info.update(to_anchor=case.to_anchor.as_dict())
    if schedule in built:
        # the ops' percent of peak against the probe in the layer's rounds, else one probed between the passes
        prof = profile_layer(built[schedule], repeat=PROFILE_REPEAT, peak_gflops=group.peak_gflops or None)
        info.update(matmul_share=prof.matmul_share, ops=[vars(r) for r in prof.rows],
                    instrumented_s=prof.instrumented_s)
    benchmark._timer = replay_timer(case.samples)
    benchmark.pedantic(lambda: None, rounds=len(case.samples), warmup_rounds=0, iterations=1)
    median = benchmark.stats.stats.median
    gflops = spec.matmul_flops() / median / 1e9
    # percent of the peak probe timed in the layer's own rounds; pct_peak_run: of the run's once-measured peak
    info.update(gflops=gflops, pct_peak=100 * gflops / (group.peak_gflops or peak.gflops),
                pct_peak_run=100 * gflops / peak.gflops)
    pct = case.pct_peak(spec.matmul_flops(), group.probe_flops)
    if pct is not None:
        info.update(pct_peak_ci=[pct.lo, pct.hi])
