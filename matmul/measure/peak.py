"""The machine's FP32 FMA peak: measured by an FMA loop, with a computed cross-check.

The measured peak runs a kernel that TVM itself compiles for the host target
(:func:`matmul.core.fma.fma_loop`): every runtime thread updates ``chains`` independent accumulator registers of
``simd_lanes_fp32`` lanes with ``acc = acc * x + y``. Enough independent chains
hide the FMA latency (4 cycles x 2 pipes needs 8 on Zen 3 and Skylake), the
scalars ``x`` and ``y`` are function arguments so nothing aliases, and the
packed FMA count in the machine code is checked, so a peak that is not a peak
raises instead of being recorded.

The computed peak is ``threads x GHz x lanes x 2 (FMA) x fma_pipes``, with the
clock read from ``/proc/cpuinfo`` (the current, not the boost, clock on most
VMs) and 2 FMA pipes assumed, as on every x86 core with AVX2 since Haswell,
or 1 where the widest FMAs were measured to issue at half rate (Zen 4's AVX-512).
It is shown beside the measured figure, never used in its place.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import tvm

from ..core.fma import CHAINS, FmaLoop, compile_fma_loop
from ..core.hardware import HardwareError, HostFacts, configure_runtime_threads, host_facts
from .timing import wait_for_quiet

#: Assumed FMA pipes per core for the computed cross-check.
FMA_PIPES = 2


@dataclass(frozen=True)
class Peak:
    """An FP32 peak figure and how it was obtained."""

    gflops: float
    method: str  # "measured" or "computed"
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def measure_fp32_peak(
    facts: HostFacts | None = None, *, chains: int = CHAINS, iters: int = 200_000, repeat: int = 30,
    spacing_s: float = 0.03,
) -> Peak:
    """Measure the FP32 FMA throughput of all runtime threads, in GFLOP/s.

    The fastest of ``repeat`` runs (about 0.4 ms each here, ``spacing_s``
    apart) is the peak: a neighbour on a shared machine can only slow a run
    down, and a median taken while one was busy read 123 GFLOP/s where the
    best read 203.

    Raises
    ------
    HardwareError
        If the compiled loop does not use packed FMA at the host's SIMD width.
    """
    facts = facts or host_facts()
    threads, lanes = facts.runtime_threads, facts.simd_lanes_fp32
    loop = _checked_loop(facts, chains, iters, "the measured peak would not be a peak")
    # x < 1 keeps the accumulators finite; the values do not affect speed.
    # Each sample is the best of 3 back-to-back runs: the first wakes the
    # runtime's worker threads, which sleep during the spacing.
    timer = loop.executable.mod.time_evaluator("fma_loop", tvm.cpu(), number=1, repeat=3)
    wait_for_quiet()  # a BLAS pool still spinning would take a core from the loop
    # The runs are spread over about a second: back to back they take ~12 ms
    # in all, and one busy neighbour process (pytest-benchmark's cpuinfo probe
    # was one) then halved every run of a 2-thread peak.
    runs = []
    for _ in range(repeat):
        runs.append(min(timer(loop.acc, 0.999, 0.001).results))
        time.sleep(spacing_s)
    return Peak(
        loop.flops / min(runs) / 1e9,
        "measured",
        f"TVM FMA loop: {threads} threads x {chains} chains x {lanes} lanes x {iters} iterations, "
        f"best of {repeat} samples {spacing_s * 1e3:.0f} ms apart",
    )


def cpu_mhz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float | None:
    """The first ``cpu MHz`` in ``/proc/cpuinfo``, or None."""
    try:
        m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo.read_text(), re.M)
    except OSError:
        return None
    return float(m.group(1)) if m else None


def computed_fp32_peak(facts: HostFacts | None = None, mhz: float | None = None) -> Peak | None:
    """``threads x GHz x lanes x 2 x FMA_PIPES`` (1 pipe where the widest FMAs issue at half rate); None when
    the clock is unknown."""
    facts = facts or host_facts()
    mhz = mhz if mhz is not None else cpu_mhz()
    if not mhz or mhz <= 0:
        return None
    pipes, why = (1, "measured half-rate FMAs") if facts.half_rate_fma else (FMA_PIPES, "assumed")
    gflops = facts.runtime_threads * mhz / 1e3 * facts.simd_lanes_fp32 * 2 * pipes
    return Peak(
        gflops,
        "computed",
        f"{facts.runtime_threads} threads x {mhz / 1e3:.2f} GHz (cpuinfo) x {facts.simd_lanes_fp32} lanes "
        f"x 2 x {pipes} FMA pipe(s) ({why})",
    )


@functools.cache
def fp32_peak() -> Peak:
    """The host's measured FP32 peak, measured once per process."""
    return measure_fp32_peak()


#: The peak probe's name among a group's candidates, and its iterations per call (about 50 us at
#: 340 GFLOP/s: short beside a sample, so the interleaved timer runs it many times per round).
PROBE = "fp32-peak"
PROBE_ITERS = 20_000


def _checked_loop(facts: HostFacts, chains: int, iters: int, why: str) -> FmaLoop:
    """The FMA loop on every runtime thread at the facts' width; HardwareError if it is not packed FMAs that wide."""
    configure_runtime_threads()  # the pool sized before its first use
    lanes = facts.simd_lanes_fp32
    loop = compile_fma_loop(facts.target(), facts.arch, facts.runtime_threads, lanes, chains, iters)
    if loop.fmas < chains:
        raise HardwareError(f"the FMA peak loop compiled to {loop.fmas} packed {lanes}-lane FMAs (need >= {chains}) "
                            f"for {facts.mcpu}; {why}")
    return loop


@functools.cache
def _probe(facts: HostFacts, chains: int, iters: int) -> tuple[Callable[[], object], float]:
    loop = _checked_loop(facts, chains, iters, "it would not measure the peak")
    return loop, loop.flops


def peak_probe(facts: HostFacts | None = None, *, chains: int = CHAINS,
               iters: int = PROBE_ITERS) -> tuple[Callable[[], object], float]:
    """A call of the FMA peak loop and the flops it does, to be timed beside kernels in the same rounds.

    The peak measured once per run moves with the clock: on a 2-core VM the same loop read 343 and
    446 GFLOP/s in two runs minutes apart (the neighbours' load sets the turbo clock), so a kernel's
    percent of a once-measured peak moved as much. Timed in the kernels' own rounds, the probe sees
    their clock: a kernel's time over the probe's, round by round, is its share of the peak in the same
    machine state (:attr:`~matmul.measure.grid.CaseTiming.vs_peak`).

    Raises
    ------
    HardwareError
        The loop does not compile to packed FMAs at the host's SIMD width.
    """
    return _probe(facts or host_facts(), chains, iters)


__all__ = ["FMA_PIPES", "PROBE", "PROBE_ITERS", "Peak", "computed_fp32_peak", "cpu_mhz", "fp32_peak",
           "measure_fp32_peak", "peak_probe"]
