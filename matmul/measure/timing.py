"""Keeping thread pools out of each other's way while timing.

Three pools share the cores of one process here: TVM's runtime pool, OpenBLAS
(NumPy) and, when PyTorch is installed, OpenMP/MKL. Each keeps its worker
threads spinning after a call before they go to sleep: OpenBLAS for about
0.1 s, TVM's pool (``TVM_THREAD_POOL_SPIN_COUNT`` yields) for about 0.2 s on
the 2-core development machine. A kernel timed while another library's
workers still spin loses a core to them: qkv M=16 under the ``full`` variant
took 4.0 ms right after a NumPy call and 1.04 ms after a quiet spell.

The cure is measurement, not a fixed sleep: :func:`wait_for_quiet` watches the
process's own CPU time (all threads) while the caller sleeps, and returns as
soon as no other thread burns CPU. Thread counts are set explicitly for every
library (:func:`blas_threads`), so TVM, NumPy and PyTorch use the same number
of cores in a comparison.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Sleep window used to sample the process's CPU time.
QUIET_WINDOW_S = 0.005
#: The process is quiet when other threads use under this fraction of a core.
QUIET_FRACTION = 0.1
#: Give up waiting after this long (a busy neighbour thread of the caller's
#: own, such as a server, would otherwise block forever).
QUIET_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Settle:
    """How long :func:`wait_for_quiet` waited, and whether quiet was reached."""

    seconds: float
    quiet: bool


def wait_for_quiet(
    *, window: float = QUIET_WINDOW_S, fraction: float = QUIET_FRACTION, timeout: float = QUIET_TIMEOUT_S
) -> Settle:
    """Sleep until no thread of this process uses the CPU.

    Samples ``time.process_time()`` (CPU time of every thread of the process)
    across sleeps of ``window`` seconds; while the caller sleeps, any CPU time
    spent belongs to other threads, such as a BLAS pool still spinning.

    Returns
    -------
    Settle
        Seconds waited and whether quiet was reached before ``timeout``.
    """
    if window <= 0 or timeout <= 0 or not 0 < fraction < 1:
        raise ValueError(f"need window > 0, timeout > 0 and 0 < fraction < 1; got {window}, {timeout}, {fraction}")
    start = time.perf_counter()
    while True:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(window)
        busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        waited = time.perf_counter() - start
        if busy < fraction:
            return Settle(waited, True)
        if waited >= timeout:
            return Settle(waited, False)


@contextlib.contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """Limit NumPy's BLAS (and any OpenMP pool loaded) to ``threads``."""
    if threads <= 0:
        raise ValueError(f"thread count must be positive, got {threads}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def blas_info() -> list[dict]:
    """The BLAS/OpenMP libraries loaded in this process, from threadpoolctl."""
    from threadpoolctl import threadpool_info

    return [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "threading_layer")}
        for info in threadpool_info()
    ]


def call_times(fn: Callable[[], object], calls: int,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``calls`` back-to-back calls of ``fn`` (``clock``: a test may pass a fake one)."""
    out = []
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def median_seconds(fn: Callable[[], object], *, calls: int = 20, warmup: int = 3,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median of ``calls`` timed calls, after a quiet spell and ``warmup`` untimed calls."""
    wait_for_quiet()
    call_times(fn, warmup, clock)
    return statistics.median(call_times(fn, calls, clock))


__all__ = [
    "QUIET_TIMEOUT_S",
    "Settle",
    "blas_info",
    "blas_threads",
    "call_times",
    "median_seconds",
    "wait_for_quiet",
]
