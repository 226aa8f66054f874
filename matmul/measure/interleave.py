"""The one interleaved timer: every candidate of a group timed block by block, in mirrored order.

On a shared 2-core machine absolute times drift by 2x between runs, and the
noise is correlated over seconds, so candidates timed one after another land
in different machine states. Here the candidates of one group are timed in
blocks ordered A B C, C B A, A B C, ... (ABBA for two): drift that is roughly
linear over a pair of rounds hits every candidate alike. Each block is the
median of ``calls`` back-to-back calls after a quiet spell (see
:func:`~matmul.measure.timing.wait_for_quiet`).

The paired comparison, compare-db, the template sweep and the learned
model's held-out timing all call :func:`time_interleaved`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .candidates import Candidate
from .timing import median_seconds

#: Each timed block lasts at least this long (see :func:`calls_for`): a 0.2 ms
#: kernel timed 10 times read up to 15% apart from itself in ABBA blocks.
BLOCK_S = 0.03


def _block(cand: Candidate, calls: int, warmup: int) -> float:
    with cand.pool():
        return median_seconds(cand.call, calls=calls, warmup=warmup)


def time_interleaved(cands: Sequence[Candidate], *, blocks: int = 4, calls: int = 10,
                     warmup: int = 2) -> list[list[float]]:
    """Block medians of each candidate, in mirrored order: A B C, C B A, A B C, ...

    With two candidates that is ABBA. Returns one list of ``blocks`` block
    medians per candidate, in the order given.
    """
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number >= 2 (mirrored pairs), got {blocks}")
    if calls < 1:
        raise ValueError(f"calls must be positive, got {calls}")
    if not cands:
        raise ValueError("no candidates to time")
    times: list[list[float]] = [[] for _ in cands]
    order = list(range(len(cands)))
    for i in range(blocks):
        for n in order if i % 2 == 0 else order[::-1]:
            times[n].append(_block(cands[n], calls, warmup))
    return times


def calls_for(cand: Candidate, calls: int, block_s: float = BLOCK_S) -> int:
    """At least ``calls``, and enough that one block of ``cand`` lasts ``block_s`` seconds."""
    with cand.pool():
        return max(calls, math.ceil(block_s / median_seconds(cand.call, calls=calls)))


__all__ = ["BLOCK_S", "calls_for", "time_interleaved"]
