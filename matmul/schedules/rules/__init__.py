"""The hardware-aware rule-based schedule (``rule_based``): no tuning, every choice explained.

* :mod:`.config`: the rules (:data:`RULES`), the config they produce and
  its legality, the plan with its reasons and cache budget;
* :mod:`.constants`: the rules' measured bounds and shares, each with its
  measurement;
* :mod:`.decide`: (shape, dtype, layout, hardware facts) -> plan;
* :mod:`.apply`: any legal config -> a TIR schedule.

Importing this package registers ``rule_based`` and its pinned forms
``rule_based[knob=value,...]`` (ablations, the template's configs), and
``rule_based_prepacked``: the same kernel taking B as a model's weight,
packed into R5's panels once by the caller instead of on every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tvm.s_tir import Schedule

from ...core.hardware import HostFacts
from ...core.registry import (
    ScheduleContext,
    Variant,
    VariantNameError,
    parse_name,
    register,
    register_parametric,
)
from .apply import apply_config, pack_panels, prepacks
from .config import (
    RULES,
    Decision,
    Plan,
    RuleConfig,
    RuleError,
    prefetch_blocker,
    rule_knobs,
    vector_lanes,
    vector_registers,
)
from .constants import (
    FMA_CHAINS,
    GEMV_MAX_ROWS,
    GEMV_STREAMS,
    HALF_RATE_L2_TK_MIN_ROWS,
    HALF_RATE_UNPACKED_MAX_ROWS,
    KPART_MIN_K,
    L2_PANEL_SHARE,
    MAX_PANELS_PER_TASK,
    NARROW_MAX_L3_SHARE,
    NARROW_MAX_ROWS,
    NARROW_ROW_BYTES,
    ORDERS,
    PAD_ROWS_MAX,
    PAGE_BYTES,
    PREFETCH_MIN_L3_SHARE,
    PREFETCH_MIN_TILES,
    STREAM_MAX_ROWS,
    TASKS_PER_THREAD,
    UNPACKED_MAX_ROWS,
    UNPADDED_MIN_ACC,
)
from .decide import block_set_load, check_overrides, decide, set_pressure

#: The registry name of the family.
NAME = "rule_based"


def parse_overrides(name: str) -> tuple[str, dict[str, Any]] | None:
    """``"rule_based[tk=64,order=ifirst]"`` -> ``("rule_based", {"tk": 64, "order": "ifirst"})``.

    Returns None when ``name`` has no bracket.

    Raises
    ------
    RuleError
        An item that is not ``knob=value``, a knob that is not a rule knob
        (the message lists them), or a knob given twice.
    """
    knobs = sorted(rule_knobs())
    try:
        parsed = parse_name(name)
    except VariantNameError as err:
        raise RuleError(f"bad rule override: {err}; write knob=value with knob one of: {', '.join(knobs)}") from None
    if parsed is not None:
        for key in parsed[1]:
            if key not in knobs:
                raise RuleError(f"bad rule override {key!r} in {name!r}; write knob=value with knob one of: "
                                f"{', '.join(knobs)}")
    return parsed


def panel_relayout(config_of: Callable[[ScheduleContext], RuleConfig]):
    """A template variant's ``relayout_b``: B as R5's panels where the config ``config_of(ctx)`` reads B
    pre-packed (:func:`prepacks`), else B itself."""
    def relayout(b, ctx: ScheduleContext):
        config = config_of(ctx)
        return pack_panels(b, config.jpack, ctx.layout) if prepacks(config, ctx.shape, batched=ctx.slices > 1) else b
    return relayout


def _rule_based(overrides: dict[str, Any]) -> Variant:
    """``rule_based``, optionally with knobs pinned (ablations use this)."""
    pinned = check_overrides(overrides)
    name = NAME + (f"[{','.join(f'{k}={v}' for k, v in pinned.items())}]" if pinned else "")

    def plan(ctx: ScheduleContext) -> Plan:
        return decide(ctx.shape, ctx.facts, dtype=ctx.dtype, layout=ctx.layout, overrides=pinned, slices=ctx.slices,
                      b_constant=ctx.b_constant)

    def apply(sch: Schedule, ctx: ScheduleContext) -> None:
        p = plan(ctx)
        apply_config(sch, p.config, ctx.shape, ctx.layout, ctx.block, prepack_b=ctx.b_constant, prefetch=p.prefetch)

    def summary(facts: HostFacts) -> str:
        return ("register-blocked GEMM from hardware rules: pad, pack B, task tiles TM x TN in parallel, "
                "TK blocks, mr x j-pack accumulators" + (f"; pinned {pinned}" if pinned else ""))

    def decisions(ctx: ScheduleContext) -> dict[str, Any]:
        p = plan(ctx)
        d = p.config.as_dict()
        d["parallel_tasks"] = p.config.tasks(ctx.shape) * ctx.slices
        d["threads"] = ctx.facts.runtime_threads
        d["vector_width"] = p.config.vector
        d["prefetch_b"] = p.prefetch
        if ctx.b_constant:
            d["b_prepacked"] = prepacks(p.config, ctx.shape, batched=ctx.slices > 1)
        return d

    return Variant(name, "rule", apply, summary, None, decisions,
                   relayout_b=panel_relayout(lambda ctx: plan(ctx).config))


register_parametric(NAME, _rule_based)

#: ``rule_based`` with B a constant (a model's weight) by default, the grid's name for
#: ``build("rule_based", ..., b_constant=True)``: where R5 packs B, the kernel reads B's panels, packed once by the
#: caller (:func:`pack_panels`) outside any timed call; elsewhere it is ``rule_based`` itself.
PREPACKED = NAME + "_prepacked"


def _prepacked() -> Variant:
    base = _rule_based({})

    def summary(facts: HostFacts) -> str:
        return base.summary(facts) + "; B a weight packed once by the caller, not on every call"

    return dataclasses.replace(base, name=PREPACKED, summary=summary, b_constant=True)


register(_prepacked())

__all__ = [
    "FMA_CHAINS",
    "GEMV_MAX_ROWS",
    "GEMV_STREAMS",
    "HALF_RATE_L2_TK_MIN_ROWS",
    "HALF_RATE_UNPACKED_MAX_ROWS",
    "KPART_MIN_K",
    "L2_PANEL_SHARE",
    "MAX_PANELS_PER_TASK",
    "NARROW_MAX_L3_SHARE",
    "NARROW_MAX_ROWS",
    "NARROW_ROW_BYTES",
    "ORDERS",
    "PAD_ROWS_MAX",
    "PAGE_BYTES",
    "PREFETCH_MIN_L3_SHARE",
    "PREFETCH_MIN_TILES",
    "PREPACKED",
    "RULES",
    "STREAM_MAX_ROWS",
    "TASKS_PER_THREAD",
    "UNPACKED_MAX_ROWS",
    "UNPADDED_MIN_ACC",
    "Decision",
    "Plan",
    "RuleConfig",
    "RuleError",
    "apply_config",
    "block_set_load",
    "check_overrides",
    "decide",
    "pack_panels",
    "panel_relayout",
    "parse_overrides",
    "prefetch_blocker",
    "prepacks",
    "rule_knobs",
    "set_pressure",
    "vector_lanes",
    "vector_registers",
]
