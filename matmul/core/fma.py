"""The FP32 FMA loop, and what its rate at two vector widths says about a core.

The loop updates ``chains`` independent accumulator registers of ``lanes`` lanes
with ``acc = acc * x + y`` in each of ``threads`` parallel workers. It is the
measured peak's kernel (:mod:`matmul.measure.peak`), and here it measures one
hardware fact the rules read: whether the widest vectors' FMAs issue at half the
rate of vectors half as wide. Zen 4 runs AVX-512 on 256-bit units, one 16-lane
FMA per cycle where it runs two of 8 lanes, so 16 lanes buy no FLOPs over 8
(measured 1.07x here); on cores with full-width units (Emerald Rapids with
AVX-512, Zen 3 with AVX2 against 128-bit vectors) the wider vector is worth
about 2x. Such a core has twice the cycles per FMA for everything else a kernel
does: loads, and the misses of a B read in place (rule R5).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from typing import Any

import numpy as np
import tvm
from tvm.script import tirx as T

log = logging.getLogger(__name__)

#: Independent accumulators per worker; 12 of the 16 vector registers, enough to hide 4 cycles x 2 pipes.
CHAINS = 12
#: Full-width FMAs must give at least this many times the FLOP/s of half-width ones, or they issue at half rate.
HALF_RATE_GAIN = 1.5
#: FMA iterations per call of the width probe (about 0.1 ms at 16 lanes on one Zen 4 core) and calls per width.
PROBE_ITERS = 30_000
PROBE_CALLS = 25
#: Register names by lane count: x86 packed fp32 FMAs, AArch64 ``fmla`` arrangements.
_X86_REGS = {16: "zmm", 8: "ymm", 4: "xmm"}
_ARM_ARRANGEMENTS = {4: "4s", 2: "2s"}


def fma_loop(threads: int, lanes: int, chains: int, iters: int) -> tvm.IRModule:
    """``iters`` rounds of ``chains`` independent ``lanes``-wide FMAs in each of ``threads`` parallel workers."""
    @T.prim_func
    def loop(acc_out: T.Buffer((threads, chains, lanes), "float32"), x: T.float32, y: T.float32):
        T.func_attr({"global_symbol": "fma_loop", "tir.noalias": True})
        for p in T.parallel(threads):
            acc = T.alloc_buffer((chains, lanes), "float32", scope="local")
            for c in T.unroll(chains):
                for v in T.vectorized(lanes):
                    acc[c, v] = acc_out[p, c, v]
            for _ in range(iters):
                for c in T.unroll(chains):
                    for v in T.vectorized(lanes):
                        acc[c, v] = acc[c, v] * x + y
            for c in T.unroll(chains):
                for v in T.vectorized(lanes):
                    acc_out[p, c, v] = acc[c, v]

    return tvm.IRModule({"fma_loop": loop})


def fma_pattern(arch: str, lanes: int) -> re.Pattern[str]:
    """Regex matching a packed fp32 FMA of ``lanes`` lanes in the assembly of ``arch``.

    Raises
    ------
    ValueError
        No packed FMA of that width on that architecture.
    """
    if arch in ("x86_64", "i686", "i386"):
        reg = _X86_REGS.get(lanes)
        if reg is None:
            raise ValueError(f"no packed FMA on x86 with {lanes} lanes (choices: {sorted(_X86_REGS)})")
        return re.compile(rf"\bvfmadd\d{{3}}ps\b[^\n]*%{reg}\d+")
    if arch in ("aarch64", "arm64"):
        arrangement = _ARM_ARRANGEMENTS.get(lanes)
        if arrangement is None:
            raise ValueError(f"no packed FMA on AArch64 with {lanes} lanes (choices: {sorted(_ARM_ARRANGEMENTS)})")
        return re.compile(rf"\bfmla\s+v\d+\.{arrangement}")
    raise ValueError(f"no FMA pattern known for architecture {arch!r}")


@dataclasses.dataclass(frozen=True)
class FmaLoop:
    """:func:`fma_loop` compiled: calling it runs the loop once on its own accumulators."""

    executable: tvm.runtime.Executable
    fn: Any  # the loop's packed function, fetched once: ``executable.mod[...]`` costs ~10 us, a tenth of a call
    acc: tvm.runtime.Tensor
    flops: float  # of one call
    fmas: int  # packed FMAs of the loop's width in its code

    def __call__(self) -> None:
        self.fn(self.acc, 0.999, 0.001)  # x < 1 keeps the accumulators finite


def compile_fma_loop(target: tvm.target.Target, arch: str, threads: int, lanes: int, chains: int = CHAINS,
                     iters: int = PROBE_ITERS) -> FmaLoop:
    """:func:`fma_loop` built for ``target``, its packed FMAs of ``lanes`` lanes counted in the assembly.

    Raises
    ------
    ValueError
        No packed FMA of that width on ``arch`` (:func:`fma_pattern`).
    """
    pattern = fma_pattern(arch, lanes)
    ex = tvm.compile(fma_loop(threads, lanes, chains, iters), target=target)
    acc = tvm.runtime.tensor(np.ones((threads, chains, lanes), np.float32))
    return FmaLoop(ex, ex.mod["fma_loop"], acc, 2.0 * lanes * chains * iters * threads,
                   len(pattern.findall(ex.mod.inspect_source("asm"))))


def _rate_probe(target: tvm.target.Target, arch: str, lanes: int) -> FmaLoop | None:
    """A one-worker FMA loop at ``lanes``, or None if it is not packed FMAs that wide."""
    try:
        loop = compile_fma_loop(target, arch, 1, lanes)
    except ValueError as err:  # no such width here, or TVM's own errors (they derive from RuntimeError, ValueError)
        log.info("no %d-lane FMA loop for %s (%s): its FMA rate is unknown", lanes, target, err)
        return None
    except RuntimeError as err:
        log.warning("the %d-lane FMA loop does not compile for %s (%s): its FMA rate is unknown", lanes, target, err)
        return None
    return loop if loop.fmas >= CHAINS else None  # no FMA (SSE), or not that wide


def width_gain(target: tvm.target.Target, arch: str, lanes: int) -> float | None:
    """FLOP/s of ``lanes``-wide FMAs over those of half as wide, on one core of this host; None if not measurable.

    The two loops alternate call by call and each keeps its fastest call: a busy neighbour can only slow a
    call, and alternating puts both widths in the same machine states.
    """
    if lanes < 4 or lanes % 2:
        return None
    probes = [_rate_probe(target, arch, lanes), _rate_probe(target, arch, lanes // 2)]
    if None in probes:
        return None
    best = [float("inf"), float("inf")]
    for _ in range(PROBE_CALLS):
        for i, loop in enumerate(probes):
            start = time.perf_counter()
            loop()
            best[i] = min(best[i], time.perf_counter() - start)
    full, half = probes
    return (full.flops / best[0]) / (half.flops / best[1])


@functools.cache
def half_rate_fma(facts: Any) -> bool | None:
    """Whether the widest FMAs of ``facts`` (a :class:`~matmul.core.hardware.HostFacts` whose target runs here)
    issue at half the rate of half-width ones on this host, measured once per process and facts: True when
    full width gives less than :data:`HALF_RATE_GAIN` times the FLOP/s. None when it cannot be measured (the
    loop does not compile to packed FMAs of both widths)."""
    gain = width_gain(facts.target(), facts.arch, facts.simd_lanes_fp32)
    return None if gain is None else gain < HALF_RATE_GAIN


__all__ = ["CHAINS", "HALF_RATE_GAIN", "PROBE_CALLS", "PROBE_ITERS", "FmaLoop", "compile_fma_loop", "fma_loop",
           "fma_pattern", "half_rate_fma", "width_gain"]
