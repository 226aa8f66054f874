"""Paired (ABBA) comparison of two variants on the same shapes.

On a shared 2-core machine absolute times drift by 2x between runs, so two
variants timed minutes apart cannot be compared. Here both are built and
verified first, then timed by the interleaved timer
(:func:`~matmul.measure.interleave.time_interleaved`) in blocks ordered
A B B A A B B A ...: any drift that is roughly linear over a block pair hits
both alike. Each block is the median of ``calls`` back-to-back calls after
its own warm-up call; a shape's figure for a side is the median of its
blocks, and the ratio ``A / B`` is B's speedup over A (above 1: B is
faster), given with a bootstrap interval over the blocks (resampled in
their pairs) and a Mann-Whitney p-value (see :mod:`~matmul.measure.stats`).
Geometric means summarise per kernel and overall, as the seed research did
for its j-pack and write-back choices.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.store import atomic_write
from ..core.tables import geomeans_by_kernel
from ..core.workloads import Workload
from .candidates import Candidate, check_candidate, prepare
from .interleave import time_interleaved
from .stats import Ratio, ratio_of_medians


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

    @property
    def estimate(self) -> Ratio:
        """B's speedup over A with its interval (blocks resampled in their ABBA pairs) and Mann-Whitney p."""
        return ratio_of_medians(self.a_blocks, self.b_blocks, paired=True)


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
        ta, tb = time_interleaved([ca, cb], blocks=blocks, calls=calls)
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
            "ci_lo": (est := r.estimate).lo, "ci_hi": est.hi, "p": est.p, "significant": est.significant,
            "a_spread": (max(r.a_blocks) - min(r.a_blocks)) / r.a_s,
            "b_spread": (max(r.b_blocks) - min(r.b_blocks)) / r.b_s,
        }
        for r in results
    ]
    table = pd.DataFrame(rows)
    geo = geomeans_by_kernel(table, ["speedup_b_over_a"]).rename(columns={"speedup_b_over_a": "speedup_geomean"})
    return table, geo


def before_after(old: Candidate, new: Candidate, twin: Candidate, *, blocks: int = 8,
                 calls: int = 10, reference: Candidate | None = None) -> dict[str, float]:
    """One change measured in one process: ``old`` and ``new`` builds timed interleaved with ``twin``, a
    second build of ``new`` (the A/A pair). ``speedup`` is old's time over new's (above 1: new is faster),
    with its interval and Mann-Whitney p; ``aa_*`` is the twin over new, the floor that speedup must clear.
    With a ``reference`` (NumPy, say) in the same rounds, ``new_vs_<its name>`` is its time over new's."""
    cands = [old, new, twin] + ([reference] if reference is not None else [])
    t_old, t_new, t_twin, *t_ref = time_interleaved(cands, blocks=blocks, calls=calls)
    r, aa = ratio_of_medians(t_old, t_new, paired=True), ratio_of_medians(t_twin, t_new, paired=True)
    row = {"old_ms": round(statistics.median(t_old) * 1e3, 4), "new_ms": round(statistics.median(t_new) * 1e3, 4),
           "speedup": round(r.value, 3), "ci_low": round(r.lo, 3), "ci_high": round(r.hi, 3), "p": round(r.p, 4),
           "aa_ratio": round(aa.value, 3), "aa_ci_low": round(aa.lo, 3), "aa_ci_high": round(aa.hi, 3)}
    if reference is not None:
        vs = ratio_of_medians(t_ref[0], t_new, paired=True)
        name = reference.name.split("[", 1)[0]
        row |= {f"new_vs_{name}": round(vs.value, 3), f"vs_{name}_ci_low": round(vs.lo, 3),
                f"vs_{name}_ci_high": round(vs.hi, 3)}
    return row


def write_rows(path: str | Path, rows: Sequence[dict]) -> None:
    """``rows`` as a CSV file, written atomically."""
    atomic_write(path, pd.DataFrame(list(rows)).to_csv(index=False))


__all__ = ["PairedResult", "before_after", "paired", "paired_table", "write_rows"]
