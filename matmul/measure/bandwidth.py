"""The machine's read bandwidth at a given working-set size, and the roofline limit of a matmul.

A matmul with few rows (a GEMV at M = 1) does two flops per element of B it
reads, so memory, not the FMA units, bounds it. Which memory depends on the
size: B of BERT-base's QKV (2.4 MB) split over two cores sits in their L2
caches between calls, LLaMA-2-7B's MLP weights (180 MB) come from DRAM each
time. The honest limit for a case is therefore the read bandwidth of this
machine for a buffer of the case's own working set, read again and again as a
benchmark calls the kernel again and again.

:func:`measure_read_bandwidth` compiles, for the host target, kernels in which
every runtime thread sums its slab of the buffer into vector accumulators
(loads and adds only), read as one sequential stream or as several side by
side (DRAM gave 17 GB/s to one stream per core and 22 to eight on the AVX-512
development host), and keeps the fastest of several spaced samples, as the
FMA peak does: a busy neighbour only ever slows a sample down. Sizes are
rounded up to an eighth of an octave (at most 9% more), so one bench run
measures a handful of sizes, once each, and a working set that fits a cache
is never probed with one that does not.

:func:`roofline` combines the two ceilings: ``min(peak, intensity x
bandwidth)``, with the intensity counted on the least traffic a matmul can
have (A and B read once, C written once).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from ..core.hardware import HostFacts, host_facts
from ..core.runner import compile_module, host_tensor
from ..core.workloads import MatmulShape
from .timing import wait_for_quiet

#: Access patterns probed, as (streams per thread, vector accumulators per stream); the best one counts.
PATTERNS = ((1, 8), (8, 2))
#: Smallest working set probed (below it, call overhead rather than bandwidth is timed).
MIN_BYTES = 1 << 18
#: Samples taken; the fastest is the bandwidth.
REPEAT = 12


@dataclass(frozen=True)
class Bandwidth:
    """A measured read bandwidth at one working-set size."""

    gbs: float
    nbytes: int
    detail: str


def probe_bytes(nbytes: int) -> int:
    """The working-set size probed for ``nbytes``: rounded up to an eighth of an octave, whole KiB, at least
    :data:`MIN_BYTES`."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 1:
        raise ValueError(f"a working set must be a positive number of bytes, got {nbytes!r}")
    size = 2 ** (math.ceil(8 * math.log2(int(nbytes)) - 1e-9) / 8)
    return max(MIN_BYTES, math.ceil(size / 1024) * 1024)


def _read_sum(threads: int, streams: int, rows: int, chains: int, lanes: int) -> tvm.IRModule:
    @T.prim_func
    def read_sum(x: T.Buffer((threads, streams, rows, chains, lanes), "float32"),
                 out: T.Buffer((threads, chains, lanes), "float32")):
        T.func_attr({"global_symbol": "read_sum", "tir.noalias": True})
        for p in T.parallel(threads):
            acc = T.alloc_buffer((chains, lanes), "float32", scope="local")
            for c in T.unroll(chains):
                for v in T.vectorized(lanes):
                    acc[c, v] = T.float32(0)
            for r in range(rows):
                for s in T.unroll(streams):
                    for c in T.unroll(chains):
                        for v in T.vectorized(lanes):
                            acc[c, v] = acc[c, v] + x[p, s, r, c, v]
            for c in T.unroll(chains):
                for v in T.vectorized(lanes):
                    out[p, c, v] = acc[c, v]

    return tvm.IRModule({"read_sum": read_sum})


def _probe(facts: HostFacts, size: int, streams: int, chains: int, repeat: int,
           spacing_s: float) -> tuple[float, int]:
    """(fastest seconds, bytes read) of one access pattern over ``size`` bytes."""
    threads, lanes = facts.runtime_threads, facts.simd_lanes_fp32
    rows = max(1, size // (threads * streams * chains * lanes * 4))
    ex = compile_module(_read_sum(threads, streams, rows, chains, lanes), facts.target())
    dev = tvm.cpu()
    x = host_tensor(np.ones((threads, streams, rows, chains, lanes), np.float32))  # the kernels' kind of memory
    out = tvm.runtime.tensor(np.zeros((threads, chains, lanes), np.float32), dev)
    timer = ex.mod.time_evaluator("read_sum", dev, number=1, repeat=3)
    wait_for_quiet()
    samples = []
    for _ in range(repeat):
        samples.append(min(timer(x, out).results))
        time.sleep(spacing_s)
    if not np.allclose(out.numpy(), rows * streams):  # every element was read and summed
        raise RuntimeError(f"the bandwidth probe summed {out.numpy().ravel()[0]} per lane, expected {rows * streams}")
    return min(samples), threads * streams * rows * chains * lanes * 4


def measure_read_bandwidth(nbytes: int, facts: HostFacts | None = None, *, repeat: int = REPEAT,
                           spacing_s: float = 0.02) -> Bandwidth:
    """Read bandwidth of all runtime threads over a buffer of :func:`probe_bytes` ``(nbytes)``, in GB/s.

    Each access pattern of :data:`PATTERNS` is sampled ``repeat`` times,
    ``spacing_s`` apart, each sample the best of 3 back-to-back passes (the
    first wakes the thread pool and brings the buffer to the cache level it
    fits in); the fastest pattern's fastest sample is the figure.
    """
    facts = facts or host_facts()
    size = probe_bytes(nbytes)
    best = None
    for streams, chains in PATTERNS:
        seconds, moved = _probe(facts, size, streams, chains, repeat, spacing_s)
        if best is None or moved / seconds > best[0]:
            best = (moved / seconds, moved, streams, chains)
    gbs, moved, streams, chains = best
    return Bandwidth(
        gbs / 1e9, moved,
        f"TVM read-and-sum over {moved / 2**20:.2f} MiB: {facts.runtime_threads} threads x {streams} stream(s) x "
        f"{chains} accumulators x {facts.simd_lanes_fp32} lanes (the best of {len(PATTERNS)} patterns), "
        f"best of {repeat} samples {spacing_s * 1e3:.0f} ms apart",
    )


def read_bandwidth(nbytes: int) -> Bandwidth:
    """The host's read bandwidth for a working set of ``nbytes`` (rounded up), measured once per size and process."""
    return _measured(probe_bytes(nbytes))


@functools.cache
def _measured(size: int) -> Bandwidth:
    return measure_read_bandwidth(size)


def bytes_moved(shape: MatmulShape, itemsize: int = 4) -> int:
    """The least traffic of one matmul call: A and B read once, C written once."""
    return (shape.M * shape.K + shape.K * shape.N + shape.M * shape.N) * itemsize


@dataclass(frozen=True)
class Limit:
    """Which ceiling bounds a matmul on this machine, and how close a measured time came to it."""

    kind: str  # "compute" or "memory"
    gflops: float  # the ceiling, in GFLOP/s
    pct: float  # percent of the ceiling reached
    bytes_moved: int
    achieved_gbs: float  # bytes_moved / time
    bandwidth_gbs: float
    bandwidth_bytes: int  # the working set the bandwidth was measured on

    def as_dict(self) -> dict:
        """The fields for a bench case's ``extra_info``: ``limit`` (the kind), ``limit_gflops``, ``limit_pct``, ..."""
        d = asdict(self)
        return {"limit": d.pop("kind"), "limit_gflops": d.pop("gflops"), "limit_pct": d.pop("pct"), **d}


def roofline(shape: MatmulShape, seconds: float, peak_gflops: float, bandwidth: Bandwidth,
             itemsize: int = 4) -> Limit:
    """The roofline limit of ``shape`` given the FMA peak and the bandwidth at its working set.

    ``kind`` is ``memory`` when the bandwidth ceiling (flops per byte x
    GB/s) lies below the FMA peak.
    """
    if seconds <= 0 or peak_gflops <= 0 or bandwidth.gbs <= 0:
        raise ValueError(f"time, peak and bandwidth must be positive, got {seconds}, {peak_gflops}, {bandwidth.gbs}")
    moved = bytes_moved(shape, itemsize)
    memory_gflops = shape.flops / moved * bandwidth.gbs
    kind, ceiling = ("memory", memory_gflops) if memory_gflops < peak_gflops else ("compute", peak_gflops)
    gflops = shape.flops / seconds / 1e9
    return Limit(kind, ceiling, 100 * gflops / ceiling, moved, moved / seconds / 1e9, bandwidth.gbs,
                 bandwidth.nbytes)


__all__ = ["PATTERNS", "Bandwidth", "Limit", "bytes_moved", "measure_read_bandwidth", "probe_bytes", "read_bandwidth",
           "roofline"]
