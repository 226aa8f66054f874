"""The FP32 peak: measured by a TVM FMA loop whose code is checked, with a
computed cross-check from the clock."""

from __future__ import annotations

import dataclasses

import pytest

from matmul import host_facts
from matmul.core.hardware import HardwareError
from matmul.measure.peak import (
    computed_fp32_peak,
    cpu_mhz,
    fp32_peak,
    measure_fp32_peak,
)


def test_measured_peak_is_positive_and_says_how():
    peak = fp32_peak()
    f = host_facts()
    assert peak.method == "measured" and peak.gflops > 0
    assert f"{f.runtime_threads} threads" in peak.detail and f"{f.simd_lanes_fp32} lanes" in peak.detail


@pytest.mark.perf  # a rate against a bound: the probe's two threads stall under the other worker's load
def test_peak_loop_beats_a_scalar_estimate_side_by_side():
    # Same run: the vector FMA loop must exceed what one scalar FMA per cycle
    # per thread could give at the computed clock.
    computed = computed_fp32_peak()
    if computed is None:
        pytest.skip("no clock in /proc/cpuinfo")
    lanes_fma_pipes = host_facts().simd_lanes_fp32 * 2
    assert fp32_peak().gflops > computed.gflops / lanes_fma_pipes


def test_computed_peak_formula(tmp_path):
    f = dataclasses.replace(host_facts(), runtime_threads=2, simd_lanes_fp32=8, half_rate_fma=False)
    p = computed_fp32_peak(f, mhz=3000.0)
    assert p.method == "computed" and p.gflops == pytest.approx(2 * 3.0 * 8 * 2 * 2) and "(assumed)" in p.detail
    assert computed_fp32_peak(dataclasses.replace(f, half_rate_fma=None), mhz=3000.0) == p  # unknown: 2 pipes
    half = computed_fp32_peak(dataclasses.replace(f, half_rate_fma=True), mhz=3000.0)  # AVX-512 on 256-bit units
    assert half.gflops == pytest.approx(p.gflops / 2) and "1 FMA pipe(s) (measured half-rate FMAs)" in half.detail
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2445.422\n")
    assert cpu_mhz(info) == pytest.approx(2445.422)
    info.write_text("processor\t: 0\n")
    assert cpu_mhz(info) is None and computed_fp32_peak(f, mhz=0) is None


def test_a_loop_without_packed_fma_is_refused():
    # Claim twice the host's SIMD width: the target cannot emit FMAs that
    # wide, so the "peak" would be a lie and must raise.
    wide = host_facts().simd_lanes_fp32 * 2
    if wide > 16:
        pytest.skip("the host already has the widest x86 vectors")
    f = dataclasses.replace(host_facts(), simd_lanes_fp32=wide)
    with pytest.raises(HardwareError, match=f"packed {wide}-lane FMAs"):
        measure_fp32_peak(f, iters=10, repeat=1)



def test_peak_samples_are_spread_over_time():
    peak = measure_fp32_peak(repeat=4, spacing_s=0.05)
    assert "best of 4 samples 50 ms apart" in peak.detail and peak.gflops > 0
