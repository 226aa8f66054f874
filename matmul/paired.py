"""Paired (ABBA) comparison of two variants on the same shapes.

On a shared 2-core machine absolute times drift by 2x between runs, so two
variants timed minutes apart cannot be compared. Here both are built and
verified first, then timed in blocks ordered A B B A A B B A ...: any drift
that is roughly linear over a block pair hits both alike. Each block is the
median of ``calls`` back-to-back calls after a quiet spell; a shape's figure
for a side is the median of its blocks, and the ratio ``A / B`` is B's
speedup over A (above 1: B is faster). Geometric means summarise per kernel
and overall, as the seed research did for its j-pack and write-back choices.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .candidates import Candidate, check_candidate, prepare
from .report import geomean
from .timing import median_seconds
from .workloads import Workload


@dataclass(frozen=True)
class PairedResult:
    workload: Workload
    layout: str
    a: str
    b: str
    a_blocks: tuple[float, ...]
    b_blocks: tuple[float, ...]

    @property
    def a_s(self) -> float:
        return statistics.median(self.a_blocks)

    @property
    def b_s(self) -> float:
        return statistics.median(self.b_blocks)

    @property
    def speedup(self) -> float:
        """A's time over B's: B's speedup over A."""
        return self.a_s / self.b_s


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
        raise ValueError(f"blocks must be an even number >= 2 (ABBA pairs), got {blocks}")
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


def time_pair(ca: Candidate, cb: Candidate, *, blocks: int = 4, calls: int = 10, warmup: int = 2) -> tuple[list, list]:
    """Block medians of A and B, in ABBA order."""
    ta, tb = time_interleaved([ca, cb], blocks=blocks, calls=calls, warmup=warmup)
    return ta, tb


def calls_for(cand: Candidate, calls: int, block_s: float) -> int:
    """At least ``calls``, and enough that one block of ``cand`` lasts ``block_s`` seconds."""
    with cand.pool():
        return max(calls, math.ceil(block_s / median_seconds(cand.call, calls=calls)))


def paired(
    a: str,
    b: str,
    loads: Sequence[Workload],
    *,
    layout: str = "NN",
    blocks: int = 4,
    calls: int = 10,
    progress=None,
) -> list[PairedResult]:
    """Compare variant (or reference) ``a`` with ``b`` on every workload."""
    check_candidate(a)
    check_candidate(b)
    if not loads:
        raise ValueError("no workloads to compare")
    results = []
    for n, w in enumerate(loads, 1):
        ca, cb = prepare(a, w.shape, layout=layout), prepare(b, w.shape, layout=layout)
        ta, tb = time_pair(ca, cb, blocks=blocks, calls=calls)
        res = PairedResult(w, layout, a, b, tuple(ta), tuple(tb))
        results.append(res)
        if progress:
            progress(f"[{n}/{len(loads)}] {w.id}: {a} {res.a_s * 1e3:.3f} ms, {b} {res.b_s * 1e3:.3f} ms, "
                     f"{b} speedup {res.speedup:.3f}x")
    return results


def paired_table(results: Sequence[PairedResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-shape rows and geometric means per kernel and overall."""
    rows = [
        {
            "kernel": r.workload.kernel, "M": r.workload.M, "K": r.workload.shape.K, "N": r.workload.shape.N,
            "layout": r.layout, "a": r.a, "b": r.b, "a_ms": r.a_s * 1e3, "b_ms": r.b_s * 1e3,
            "speedup_b_over_a": r.speedup,
            "a_spread": (max(r.a_blocks) - min(r.a_blocks)) / r.a_s,
            "b_spread": (max(r.b_blocks) - min(r.b_blocks)) / r.b_s,
        }
        for r in results
    ]
    table = pd.DataFrame(rows)
    geo = [
        {"kernel": k, "shapes": len(g), "speedup_geomean": geomean(g["speedup_b_over_a"])}
        for k, g in [*table.groupby("kernel", sort=False), ("all", table)]
    ]
    return table, pd.DataFrame(geo)


__all__ = ["PairedResult", "paired", "paired_table", "time_pair"]
