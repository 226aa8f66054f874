"""The seed research's manual variants, as data.

They differ only in which loops are split, reordered, parallelised,
vectorised and unrolled, so each is a :class:`Recipe` applied by one
function, :meth:`Recipe.apply`. The j-split factor of the recipes is the
host's SIMD width (8 fp32 lanes on AVX2, as in the seed), taken from
:class:`~matmul.core.hardware.HostFacts`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tvm.s_tir import Schedule

from ..core.hardware import HostFacts
from ..core.registry import ScheduleContext, Variant, register

#: Symbolic split factor meaning "the target's fp32 SIMD lanes".
SIMD = "simd"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A seed-style manual schedule as data.

    Attributes
    ----------
    j_split, k_split : int, "simd" or None
        Inner factor of ``split(j)`` / ``split(k)``; the loops become
        ``j0, j1`` / ``k0, k1``. ``"simd"`` means the target's fp32 lanes.
    order : tuple of str, optional
        Loop order passed to ``reorder``.
    parallel, vectorize, unroll : str, optional
        Loop to parallelise / vectorise / unroll.
    """

    j_split: int | str | None = None
    k_split: int | str | None = None
    order: tuple[str, ...] | None = None
    parallel: str | None = None
    vectorize: str | None = None
    unroll: str | None = None

    def __post_init__(self) -> None:
        names = {"i", "j0", "j1"} if self.j_split else {"i", "j"}
        names |= {"k0", "k1"} if self.k_split else {"k"}
        for field in ("parallel", "vectorize", "unroll"):
            loop = getattr(self, field)
            if loop is not None and loop not in names:
                raise ValueError(f"recipe {field}={loop!r} names no loop; loops are {sorted(names)}")
        if self.order is not None and set(self.order) != names:
            raise ValueError(f"recipe order {self.order} must list exactly the loops {sorted(names)}")

    @staticmethod
    def _factor(factor: int | str, facts: HostFacts) -> int:
        return facts.simd_lanes_fp32 if factor == SIMD else int(factor)

    def decisions(self, ctx: ScheduleContext) -> dict[str, Any]:
        """The schedule's concrete choices for one shape, as plain data.

        ``vector_width`` is the extent of the vectorised loop (the whole
        ``j`` extent when ``j`` is vectorised unsplit), ``threads`` the
        runtime threads a parallel loop spreads over, and ``parallel_tasks``
        that loop's extent.
        """
        shape, facts = ctx.shape, ctx.facts
        j_in = self._factor(self.j_split, facts) if self.j_split else None
        k_in = self._factor(self.k_split, facts) if self.k_split else None
        extents = {
            "i": shape.M,
            "j": shape.N,
            "j0": -(-shape.N // j_in) if j_in else None,
            "j1": j_in,
            "k": shape.K,
            "k0": -(-shape.K // k_in) if k_in else None,
            "k1": k_in,
        }
        return {
            "tile_j": j_in,
            "tile_k": k_in,
            "order": ",".join(self.order) if self.order else "i,j,k",
            "vectorize": self.vectorize,
            "vector_width": extents[self.vectorize] if self.vectorize else 1,
            "unroll": self.unroll,
            "unroll_extent": extents[self.unroll] if self.unroll else 1,
            "parallel": self.parallel,
            "parallel_tasks": extents[self.parallel] if self.parallel else 1,
            "threads": facts.runtime_threads if self.parallel else 1,
        }

    def describe(self, facts: HostFacts) -> str:
        """The transforms in the seed's notation, e.g. ``split(k, 16) + parallel(i)``."""
        steps = []
        if self.j_split:
            steps.append(f"split(j, {self._factor(self.j_split, facts)})")
        if self.k_split:
            steps.append(f"split(k, {self._factor(self.k_split, facts)})")
        if self.order:
            steps.append(f"reorder({', '.join(self.order)})")
        for prim in ("parallel", "vectorize", "unroll"):
            if getattr(self, prim):
                steps.append(f"{prim}({getattr(self, prim)})")
        return " + ".join(steps) or "none (triple loop as written)"

    def apply(self, sch: Schedule, ctx: ScheduleContext) -> None:
        """Apply the recipe to the matmul block (``C`` in the canonical kernel); batch loops join ``i``."""
        *batch, i, j, k = sch.get_loops(sch.get_sblock(ctx.block))
        if batch:
            i = sch.fuse(*batch, i)
        loops = {"i": i, "j": j, "k": k}
        if self.j_split:
            loops["j0"], loops["j1"] = sch.split(j, factors=[None, self._factor(self.j_split, ctx.facts)])
        if self.k_split:
            loops["k0"], loops["k1"] = sch.split(k, factors=[None, self._factor(self.k_split, ctx.facts)])
        if self.order:
            sch.reorder(*(loops[name] for name in self.order))
        if self.parallel:
            sch.parallel(loops[self.parallel])
        if self.vectorize:
            sch.vectorize(loops[self.vectorize])
        if self.unroll:
            sch.unroll(loops[self.unroll])

def register_recipe(name: str, recipe: Recipe, *, illegal_because: str | None = None) -> Variant:
    """Register a manual :class:`Recipe` as a variant."""
    return register(Variant(name, "manual", recipe.apply, recipe.describe, illegal_because, recipe.decisions))


# --------------------------------------------------------------------------- the seed's manual variants
# Transforms follow the Methodology table of seed 001.
register_recipe("baseline", Recipe())
for _tk in (4, 8, 16, 32, 64):
    register_recipe(f"k{_tk}", Recipe(k_split=_tk, order=("i", "j", "k0", "k1"), vectorize="j"))
register_recipe("parallel", Recipe(parallel="i", vectorize="j"))
register_recipe("vec_j", Recipe(vectorize="j"))
# Vectorising a split of the reduction axis: TVM refuses, the reduction
# iterator is not data parallel.
register_recipe(
    "vec_k",
    Recipe(k_split=SIMD, vectorize="k1"),
    illegal_because="is not a data parallel block iter",
)
register_recipe("parallel_k16", Recipe(k_split=16, order=("i", "j", "k0", "k1"), parallel="i", unroll="k1"))
register_recipe(
    "parallel_vec_j",
    Recipe(j_split=SIMD, order=("i", "j0", "j1", "k"), parallel="i", vectorize="j1"),
)
register_recipe(
    "vec_j_k16",
    Recipe(j_split=SIMD, k_split=16, order=("i", "j0", "k0", "j1", "k1"), vectorize="j1", unroll="k1"),
)
register_recipe(
    "full",
    Recipe(j_split=SIMD, k_split=16, order=("i", "j0", "k0", "j1", "k1"), parallel="i", vectorize="j1", unroll="k1"),
)
del _tk

__all__ = ["SIMD", "Recipe", "register_recipe"]
