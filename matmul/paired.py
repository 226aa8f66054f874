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
from pathlib import Path

import pandas as pd

from .candidates import Candidate, check_candidate, prepare, prepare_record
from .report import geomean
from .timing import median_seconds
from .workloads import MatmulShape, Workload


#: Each timed block lasts at least this long (see :func:`calls_for`): a 0.2 ms
#: kernel timed 10 times read up to 15% apart from itself in ABBA blocks.
BLOCK_S = 0.03


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


def compare_databases(
    base_root: str | Path,
    new_root: str | Path,
    shapes: Sequence[tuple[str, MatmulShape]],
    *,
    layout: str = "NN",
    dtype: str = "float32",
    beside: Sequence[str] = ("rule_based", "numpy"),
    blocks: int = 4,
    calls: int = 10,
    progress=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two MetaSchedule databases' best records per shape, timed interleaved with ``beside``.

    For each (label, shape): the best record under ``base_root`` and the
    best under ``new_root`` (for the running CPU profile), each built and
    verified, and every candidate in ``beside`` (variants or references),
    all timed in mirrored blocks in one run. ``new_over_base`` is the new
    database's speedup (above 1: the new record is faster); each ``beside``
    candidate gets its speedup over the new record. ``*_recorded_ms`` is what
    the tuner measured for that record when it was tuned, beside ``*_ms``,
    what it takes now.

    Returns the per-shape table and geometric means per kernel and overall.

    Raises
    ------
    NoRecordError
        A shape has no record in one of the databases (the message names it).
    """
    for name in beside:
        check_candidate(name)
    if not shapes:
        raise ValueError("no shapes to compare")
    rows = []
    for n, (label, shape) in enumerate(shapes, 1):
        cands = {"base": prepare_record("base", shape, base_root, layout=layout, dtype=dtype),
                 "new": prepare_record("new", shape, new_root, layout=layout, dtype=dtype)}
        cands.update((name, prepare(name, shape, layout=layout, dtype=dtype)) for name in beside)
        times = time_interleaved(list(cands.values()), blocks=blocks, calls=calls_for(cands["new"], calls, BLOCK_S))
        med = {k: statistics.median(v) for k, v in zip(cands, times)}
        row = {"shape": label, "M": shape.M, "K": shape.K, "N": shape.N, "layout": layout,
               "base_trials": cands["base"].decisions["trials"], "new_trials": cands["new"].decisions["trials"],
               "base_recorded_ms": cands["base"].decisions["run_us"] * 1e-3,
               "new_recorded_ms": cands["new"].decisions["run_us"] * 1e-3}
        row.update((f"{k}_ms", v * 1e3) for k, v in med.items())
        row.update((f"{k}_gflops", shape.flops / v / 1e9) for k, v in med.items())
        row["new_over_base"] = med["base"] / med["new"]
        row.update((f"{k}_over_new", med["new"] / med[k]) for k in beside)
        row["spread"] = max((max(v) - min(v)) / statistics.median(v) for v in times)
        rows.append(row)
        if progress:
            progress(f"[{n}/{len(shapes)}] {label}: new {med['new'] * 1e3:.3f} ms, base {med['base'] * 1e3:.3f} ms "
                     f"(new {row['new_over_base']:.3f}x)"
                     + "".join(f", {k} {row[f'{k}_over_new']:.3f}x new" for k in beside))
    table = pd.DataFrame(rows)
    table.insert(0, "kernel", [_kernel_of(label) for label in table["shape"]])
    ratios = [c for c in table.columns if c.endswith(("_over_base", "_over_new", "_gflops"))]
    geo = pd.DataFrame([{"kernel": k, "shapes": len(g), **{c: geomean(g[c]) for c in ratios}}
                        for k, g in [*table.groupby("kernel", sort=False), ("all", table)]])
    return table, geo


def _kernel_of(label: str) -> str:
    """``qkv-M16`` -> ``qkv``; an explicit shape's label is its own group."""
    head, sep, tail = label.rpartition("-M")
    return head if sep and tail.isdigit() else label


__all__ = ["PairedResult", "compare_databases", "paired", "paired_table", "time_pair"]
