"""The read-bandwidth probe and the roofline limit every bench case reports (issue 16)."""

from __future__ import annotations

import math

import pytest

from matmul import MatmulShape, kernel_shape
from matmul.measure.bandwidth import (
    MIN_BYTES,
    Bandwidth,
    bytes_moved,
    measure_read_bandwidth,
    probe_bytes,
    roofline,
)


@pytest.mark.parametrize("n", [1, 1000, MIN_BYTES + 1, 2_400_000, 4 << 20, 190_000_000])
def test_probe_sizes_cover_the_working_set_within_an_eighth_of_an_octave(n):
    size = probe_bytes(n)
    assert size >= n and size % 1024 == 0
    assert size == MIN_BYTES or size <= n * 2 ** (1 / 8) + 1024  # never a cache level further out than needed


@pytest.mark.parametrize("bad", [0, -5, 2.5, "1e6", True, None])
def test_a_bad_working_set_is_refused(bad):
    with pytest.raises(ValueError, match="positive number of bytes"):
        probe_bytes(bad)


def test_least_traffic_counts_a_b_and_c_once():
    s = MatmulShape(2, 3, 5)
    assert bytes_moved(s) == (2 * 3 + 3 * 5 + 2 * 5) * 4 and bytes_moved(s, 8) == 2 * bytes_moved(s)


def test_a_gemv_is_memory_bound_and_a_big_gemm_compute_bound():
    bw = Bandwidth(40.0, 1 << 20, "synthetic")
    peak = 500.0
    gemv = kernel_shape("qkv", 1)  # about 0.5 flop per byte: 20 GFLOP/s at 40 GB/s
    lim = roofline(gemv, gemv.flops / 10e9, peak, bw)  # ran at 10 GFLOP/s
    ceiling = gemv.flops / bytes_moved(gemv) * 40.0
    assert lim.kind == "memory" and lim.gflops == pytest.approx(ceiling) and ceiling < peak
    assert lim.pct == pytest.approx(100 * 10 / ceiling)
    assert lim.achieved_gbs == pytest.approx(bytes_moved(gemv) / (gemv.flops / 10e9) / 1e9)
    gemm = kernel_shape("mlp_expand", 384)
    lim = roofline(gemm, gemm.flops / 250e9, peak, bw)
    assert lim.kind == "compute" and lim.gflops == peak and lim.pct == pytest.approx(50.0)
    d = lim.as_dict()
    assert d["limit"] == "compute" and d["limit_pct"] == pytest.approx(50.0) and "kind" not in d  # bench's "kind" stays


@pytest.mark.parametrize("args", [(0.0, 100.0, 10.0), (1e-3, 0.0, 10.0), (1e-3, 100.0, 0.0)])
def test_roofline_refuses_non_positive_figures(args):
    seconds, peak, gbs = args
    with pytest.raises(ValueError, match="must be positive"):
        roofline(kernel_shape("qkv", 1), seconds, peak, Bandwidth(gbs, 1 << 20, "synthetic"))


@pytest.mark.perf  # a rate: under the other xdist worker's load a two-thread probe read 0.067 GB/s in CI
def test_the_probe_reads_the_whole_buffer_and_reports_a_rate():
    bw = measure_read_bandwidth(MIN_BYTES, repeat=2, spacing_s=0.0)
    # the probe checks its own sum (every element read once per pass); here: what it read, and a sane rate
    assert MIN_BYTES // 2 <= bw.nbytes <= MIN_BYTES and math.isfinite(bw.gbs) and bw.gbs > 0.1
    assert "read-and-sum" in bw.detail
