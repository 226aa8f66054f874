"""The measured FMA rate at two widths (``HostFacts.half_rate_fma``): how it is measured, what it may read, and
that facts for a target this host cannot run leave it unknown."""

from __future__ import annotations

import pytest
import tvm

from matmul.core.fma import CHAINS, HALF_RATE_GAIN, fma_loop, fma_pattern, half_rate_fma, width_gain
from matmul.core.hardware import facts_for

from .profiles import HOST, RUNNABLE


@pytest.mark.perf  # two FMA rates read against each other and against the session's first reading
@pytest.mark.parametrize("target", RUNNABLE)
def test_the_facts_hold_the_measured_rate_of_every_target_this_host_runs(target):
    facts = RUNNABLE[target]
    gain = width_gain(facts.target(), facts.arch, facts.simd_lanes_fp32)
    assert gain is not None, f"the FMA loop did not compile to packed FMAs of {facts.simd_lanes_fp32} lanes and half"
    # Twice the lanes give at most about twice the FLOP/s, and never much less than the narrower vector's.
    assert 0.7 < gain < 2.5, gain
    assert facts.half_rate_fma is not None
    assert facts.half_rate_fma == half_rate_fma(facts) == (gain < HALF_RATE_GAIN) or abs(gain - HALF_RATE_GAIN) < 0.2


def test_the_two_widths_compile_to_their_own_packed_fmas():
    lanes = HOST.simd_lanes_fp32
    for width in (lanes, lanes // 2):
        asm = tvm.compile(fma_loop(1, width, CHAINS, 8), target=HOST.target()).mod.inspect_source("asm")
        assert len(fma_pattern(HOST.arch, width).findall(asm)) >= CHAINS, width
    assert width_gain(HOST.target(), HOST.arch, 3) is None  # no half of an odd width: not measurable, unknown


def test_widths_and_architectures_without_a_packed_fma_are_named():
    with pytest.raises(ValueError, match=r"no packed FMA on x86 with 32 lanes \(choices: \[4, 8, 16\]\)"):
        fma_pattern("x86_64", 32)
    with pytest.raises(ValueError, match=r"no packed FMA on AArch64 with 8 lanes \(choices: \[2, 4\]\)"):
        fma_pattern("aarch64", 8)
    with pytest.raises(ValueError, match="no FMA pattern known for architecture 'riscv64'"):
        fma_pattern("riscv64", 4)
    assert fma_pattern("x86_64", 16).search("\tvfmadd231ps\t%zmm26, %zmm30, %zmm3")
    assert not fma_pattern("x86_64", 16).search("\tvfmadd231ps\t%ymm26, %ymm30, %ymm3")
    assert fma_pattern("aarch64", 4).search("\tfmla\tv0.4s, v1.4s, v2.4s")


def test_a_target_this_host_cannot_run_leaves_the_rate_unknown():
    for mcpu in ("graniterapids", "sapphirerapids", "znver5", "neoverse-v2"):
        try:
            facts = facts_for({"kind": "llvm", "mcpu": mcpu, "num-cores": HOST.num_cores})
        except Exception:  # an mcpu LLVM does not know for this triple
            continue
        if facts.missing_features:
            assert facts.half_rate_fma is None, mcpu
            return
    pytest.skip("this host runs every target tried")


def test_a_target_without_packed_fmas_leaves_the_rate_unknown():
    if HOST.arch != "x86_64":
        pytest.skip("an x86 target without AVX")
    facts = facts_for({"kind": "llvm", "mcpu": HOST.mcpu, "num-cores": HOST.num_cores, "mattr": ["-avx"]})
    assert facts.simd_lanes_fp32 == 4 and not facts.missing_features
    assert facts.half_rate_fma is None  # SSE multiplies and adds: no FMA of 4 lanes, none of 2
