"""Schedule variants, in one registry keyed by name.

The seed research's manual variants differ only in which loops are split,
reordered, parallelised, vectorised and unrolled, so each is a
:class:`Recipe` (data) applied by one function, :meth:`Recipe.apply`. The
j-split factor of the recipes is the host's SIMD width (8 fp32 lanes on AVX2,
as in the seed), taken from :class:`~matmul.hardware.HostFacts`.

Later schedules (rule-based, MetaSchedule, learned) register themselves with
:func:`register` under the same contract: ``apply(sch, ctx)`` transforms a
``tvm.s_tir.Schedule`` of the canonical kernel in place.

A variant may be *declared illegal*: applying it raises
``tvm.s_tir.ScheduleError``, and :attr:`Variant.illegal_because` holds the
phrase TVM's message contains, so tests can hold the registry to its word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tvm.s_tir import Schedule, ScheduleError

from .hardware import HostFacts, host_facts
from .kernel import BLOCK, check_dtype, check_layout, matmul_module
from .rules import apply_config, check_overrides, decide, parse_overrides
from .workloads import MatmulShape

#: Loop handles a recipe may name, after its splits.
_LOOP_NAMES = ("i", "j", "j0", "j1", "k", "k0", "k1")
#: Symbolic split factor meaning "the target's fp32 SIMD lanes".
SIMD = "simd"


@dataclasses.dataclass(frozen=True)
class ScheduleContext:
    """Everything a variant may look at besides the schedule itself."""

    shape: MatmulShape
    dtype: str
    layout: str
    facts: HostFacts


ApplyFn = Callable[[Schedule, ScheduleContext], None]


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
        """Apply the recipe to the canonical kernel's block ``C``."""
        block = sch.get_sblock(BLOCK)
        i, j, k = sch.get_loops(block)
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


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named way to schedule the canonical matmul.

    Attributes
    ----------
    name : str
        Registry key; also the benchmark parametrize id.
    family : str
        ``manual`` (seed variants), ``rule`` (hardware-aware rules), ``search``
        (MetaSchedule), ``learned`` (ML-predicted).
    apply : callable
        ``apply(sch, ctx)``; transforms the schedule in place.
    summary : callable
        ``summary(facts) -> str``: the transforms, in words.
    illegal_because : str, optional
        For a declared-illegal variant, a phrase of the ``ScheduleError``
        message that applying it raises. None for legal variants.
    decisions : callable, optional
        ``decisions(ctx) -> dict``: the concrete choices (tiles, vector
        width, threads) for one shape; recorded with every benchmark.
    needs_record : bool
        True for a variant that replays a tuning record: it schedules only
        the shapes the running profile's database holds (others raise
        :class:`~matmul.tuning.NoRecordError`, naming the command that tunes
        them).
    """

    name: str
    family: str
    apply: ApplyFn
    summary: Callable[[HostFacts], str]
    illegal_because: str | None = None
    decisions: Callable[[ScheduleContext], dict[str, Any]] | None = None
    needs_record: bool = False

    @property
    def legal(self) -> bool:
        return self.illegal_because is None


_REGISTRY: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add a variant to the registry; a duplicate name is a ``ValueError``."""
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} is already registered")
    _REGISTRY[variant.name] = variant
    return variant


def register_recipe(name: str, recipe: Recipe, *, illegal_because: str | None = None) -> Variant:
    """Register a manual :class:`Recipe` as a variant."""
    return register(Variant(name, "manual", recipe.apply, recipe.describe, illegal_because, recipe.decisions))


def variant_names(*, legal_only: bool = False, family: str | None = None, standalone: bool = False) -> list[str]:
    """Registered names in registration order, optionally filtered.

    ``standalone=True`` leaves out variants that need a tuning record, for
    callers that schedule arbitrary shapes.
    """
    return [
        v.name
        for v in _REGISTRY.values()
        if (v.legal or not legal_only) and (family is None or v.family == family)
        and not (standalone and v.needs_record)
    ]


#: Variants that take knob overrides in their name, ``base[knob=value,...]``:
#: base name -> factory(overrides) -> Variant.
_PARAMETRIC: dict[str, Callable[[dict[str, Any]], Variant]] = {}


def get_variant(name: str) -> Variant:
    """Look a variant up by name.

    A parametric variant also answers to ``base[knob=value,...]`` (for example
    ``rule_based[tk=64,jpack=16]``), which pins those knobs.

    Raises
    ------
    ValueError
        For an unknown name (the message lists every known variant) or a bad
        override (the message lists the knobs).
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    parsed = parse_overrides(name) if isinstance(name, str) else None
    if parsed is not None and parsed[0] in _PARAMETRIC:
        return _PARAMETRIC[parsed[0]](parsed[1])
    raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(_REGISTRY)}")


def variant_decisions(
    variant: str, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN", facts: HostFacts | None = None
) -> dict[str, Any]:
    """A variant's concrete choices for one shape (empty if it records none)."""
    v = get_variant(variant)
    if v.decisions is None:
        return {}
    return v.decisions(ScheduleContext(shape, check_dtype(dtype), check_layout(layout), facts or host_facts()))


def schedule(
    variant: str,
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    debug_mask: str | int = "all",
) -> Schedule:
    """Build the canonical kernel and apply a variant to it.

    Parameters
    ----------
    variant : str
        A registered name (see :func:`variant_names`).
    shape : MatmulShape
    dtype, layout : str
        See :mod:`matmul.kernel`.
    facts : HostFacts, optional
        Hardware facts; default: the host.
    debug_mask : str or int
        ``"all"`` verifies the IR after every primitive (cheap for one block).

    Raises
    ------
    ValueError
        Unknown variant, dtype or layout.
    tvm.s_tir.ScheduleError
        The variant is illegal for this kernel (declared-illegal variants
        always raise; the note added to the error says so).
    """
    v = get_variant(variant)
    check_dtype(dtype)
    check_layout(layout)
    facts = facts or host_facts()
    sch = Schedule(matmul_module(shape, dtype, layout), debug_mask=debug_mask)
    try:
        v.apply(sch, ScheduleContext(shape, dtype, layout, facts))
    except ScheduleError as err:
        if v.legal:
            err.add_note(f"variant {variant!r} failed to schedule {shape} ({dtype}, {layout})")
        else:
            err.add_note(f"variant {variant!r} is declared illegal: {v.illegal_because}")
        raise
    return sch


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


# --------------------------------------------------------------------------- the rule-based schedule
def _rule_based(overrides: dict[str, Any]) -> Variant:
    """``rule_based``, optionally with knobs pinned (ablations use this)."""
    pinned = check_overrides(overrides)
    name = "rule_based" + (f"[{','.join(f'{k}={v}' for k, v in pinned.items())}]" if pinned else "")

    def plan(ctx: ScheduleContext):
        return decide(ctx.shape, ctx.facts, dtype=ctx.dtype, layout=ctx.layout, overrides=pinned)

    def apply(sch: Schedule, ctx: ScheduleContext) -> None:
        apply_config(sch, plan(ctx).config, ctx.shape, ctx.layout)

    def summary(facts: HostFacts) -> str:
        return ("register-blocked GEMM from hardware rules: pad, pack B, task tiles TM x TN in parallel, "
                "TK blocks, mr x j-pack accumulators" + (f"; pinned {pinned}" if pinned else ""))

    def decisions(ctx: ScheduleContext) -> dict[str, Any]:
        p = plan(ctx)
        d = p.config.as_dict()
        d["parallel_tasks"] = p.config.tasks(ctx.shape)
        d["threads"] = ctx.facts.runtime_threads
        d["vector_width"] = p.config.vector
        return d

    return Variant(name, "rule", apply, summary, None, decisions)


register(_rule_based({}))
_PARAMETRIC["rule_based"] = _rule_based


# --------------------------------------------------------------------------- MetaSchedule's best record
def _ms_best(ctx: ScheduleContext):
    from .tuning import records

    return records(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)[0]


def _ms_apply(sch: Schedule, ctx: ScheduleContext) -> None:
    from .tuning import apply_record

    apply_record(sch, _ms_best(ctx))


def _ms_decisions(ctx: ScheduleContext) -> dict[str, Any]:
    from .traces import record_decisions

    return record_decisions(_ms_best(ctx), ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)


register(Variant(
    "metaschedule", "search", _ms_apply,
    lambda facts: f"MetaSchedule's fastest record for the shape, from the {facts.profile} database",
    decisions=_ms_decisions, needs_record=True,
))


# --------------------------------------------------------------------------- the learned schedule
def _ml_prediction(ctx: ScheduleContext):
    from .ml import predict

    return predict(ctx.shape, ctx.facts, dtype=ctx.dtype, layout=ctx.layout)


def _ml_apply(sch: Schedule, ctx: ScheduleContext) -> None:
    apply_config(sch, _ml_prediction(ctx).config, ctx.shape, ctx.layout)


register(Variant(
    "ml_guided", "learned", _ml_apply,
    lambda facts: (f"the rule template with the config a LightGBM regressor picks for the shape ({facts.profile} "
                   "model); no search; the rules' config when the model is missing, broken or illegal"),
    decisions=lambda ctx: _ml_prediction(ctx).decisions,
))

__all__ = [
    "SIMD",
    "Recipe",
    "ScheduleContext",
    "Variant",
    "get_variant",
    "register",
    "register_recipe",
    "schedule",
    "variant_decisions",
    "variant_names",
]
