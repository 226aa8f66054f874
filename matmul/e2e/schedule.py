"""The schedule pass: every matmul PrimFunc of a lowered model scheduled by a suite variant, the rest by dlight.

For each PrimFunc, :func:`~.detect.find_matmul` decides from the blocks whether it is a matmul. A matmul
gets the chosen variant (``rule_based``, ``ml_guided``, a manual recipe, pinned knobs too) on its own
block, exactly as the variant schedules the canonical kernel of the same slice shape and layout; the
epilogue (bias, GELU, scaling, residual) is then inlined into the variant's write-back, so it costs no
extra pass over memory. A variant without a write-back stage (the manual recipes) gets the epilogue
computed under the matmul's outer loop instead. Other PrimFuncs (softmax, layer norm) get the row
schedule of :mod:`.rows` (rows in parallel, reductions one vector wide), else dlight's CPU rules; the
injective ones left over (reshape, transpose) get one stated default: producers inlined, the outer loops
fused and run in parallel. :class:`FuncPlan` records what each function got.

The schedule ``none`` leaves every function as TVM's default build lowers it: the baseline. The schedule
``metaschedule`` replays, on each matmul function, the fastest record of that function tuned as its own
MetaSchedule task (see :mod:`.tune`); the records of canonical kernels serve only where they replay.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm.s_tir import Schedule, ScheduleError
from tvm.s_tir import dlight as dl
from tvm.tirx import ForKind
from tvm.tirx.analysis import undefined_vars

from ..core.hardware import HostFacts, host_facts
from ..core.registry import ScheduleContext, get_variant, variant_names
from .detect import MatmulFunc, find_matmul
from .prepack import Packed, b_position, constant_args, relayout
from .rows import row_schedule
from .tune import task_of, tuned_function

log = logging.getLogger(__name__)

#: The schedule name of the unscheduled default build.
NONE = "none"
#: The schedule that replays the layer's own MetaSchedule tasks (``python -m matmul e2e --tune``).
METASCHEDULE = "metaschedule"
#: Variant families that schedule the matmul block directly; MetaSchedule replays records made on the
#: canonical kernel's block and loops, which a fused function does not have.
FAMILIES = ("rule", "learned", "manual")
#: Suffix of a schedule whose build packs the weights again on every forward pass, as a kernel packs B on
#: every call (``rule_based@repack``); without it the weights are packed once, when loaded (:mod:`.prepack`).
REPACK = "@repack"
#: The row-wise reductions' own schedule (:mod:`.rows`), tried first on every non-matmul PrimFunc.
ROWS = "rows: parallel, vector-wide reductions"
#: dlight's CPU rules (0.27 has no CPU matmul rule), tried in order on what the row schedule does not take; a
#: result that repeats work in every iteration of a parallel loop (:func:`repeated_work`) is refused.
DLIGHT_RULES = ("GEMV", "Reduction")
_realize = tvm_ffi.get_global_func("s_tir.schedule.GetSBlockRealize")


@dataclass
class FuncPlan:
    """What one PrimFunc of the model got from the pass."""

    name: str
    kind: str  # "matmul", "reduction" (dlight), "injective" (the default), "other" (left as lowered)
    schedule: str
    matmul: MatmulFunc | None = None
    epilogue: str = ""
    decisions: dict[str, Any] = field(default_factory=dict)
    #: The weights this function reads pre-packed (``forward``'s parameter names); empty: B packed per call,
    #: or not packed at all.
    prepacked: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.matmul is not None:
            d["matmul"] = {"M": self.matmul.shape.M, "K": self.matmul.shape.K, "N": self.matmul.shape.N,
                           "layout": self.matmul.layout, "batch": list(self.matmul.batch),
                           "epilogue_blocks": list(self.matmul.epilogue), "describe": self.matmul.describe()}
        return d


def schedule_names() -> list[str]:
    """Every schedule the pass takes: ``none``, the legal variants of :data:`FAMILIES`, ``metaschedule``. A
    variant that takes B pre-packed (``rule_based_prepacked``) is left out: the pass itself decides which
    weights are packed once (:mod:`.prepack`), for every variant."""
    return [NONE] + [n for f in FAMILIES for n in variant_names(legal_only=True, family=f)
                     if not get_variant(n).b_constant] + [METASCHEDULE]


def split_schedule(name: str) -> tuple[str, bool]:
    """``(schedule, prepack)``: the name without :data:`REPACK`, and whether the weights are packed once."""
    return (name[:-len(REPACK)], False) if name.endswith(REPACK) else (name, True)


def check_schedule(name: str) -> str:
    """``name`` if the pass can use it; a ValueError naming the choices otherwise."""
    base, prepack = split_schedule(name)
    if not prepack:
        if base in (NONE, METASCHEDULE):
            raise ValueError(f"schedule {name!r}: {REPACK} applies to a variant of the rule template's families "
                             f"(the ones that pack B); {base!r} never packs the weights")
        check_schedule(base)
        if get_variant(base).family == "manual":
            raise ValueError(f"schedule {name!r}: {REPACK} applies to the rule template's families; the manual "
                             f"recipe {base!r} does not pack the weights")
        return name
    if name in (NONE, METASCHEDULE):
        return name
    choices = ", ".join(schedule_names())
    try:
        v = get_variant(name)
    except ValueError as err:
        raise ValueError(f"unknown schedule {name!r} ({err}); choose one of: {choices}") from None
    if v.family not in FAMILIES:
        raise ValueError(f"schedule {name!r} (family {v.family!r}) cannot schedule a fused model function: it "
                         f"replays records made on the canonical kernel (the layer's own tasks are tuned with "
                         f"`python -m matmul e2e --tune` and replayed by {METASCHEDULE!r}); choose one of: {choices}")
    if not v.legal:
        raise ValueError(f"schedule {name!r} is declared illegal ({v.illegal_because}); choose one of: {choices}")
    if v.b_constant:
        raise ValueError(f"schedule {name!r} is a kernel variant that takes B pre-packed; in a model the pass packs "
                         f"the weights once for every variant (add {REPACK} to pack per call); choose one of: "
                         f"{choices}")
    return name


def _fuse_epilogue(sch: Schedule, info: MatmulFunc) -> str:
    """Inline the epilogue into the matmul's last write; say where it went."""
    if not info.epilogue:
        return ""
    *inner, last = info.epilogue
    try:
        for name in inner:
            sch.compute_inline(sch.get_sblock(name))
    except ScheduleError as err:
        log.info("epilogue of %s not inlined: %s", info.block, err)
        return "separate pass (an epilogue block could not be inlined)"
    final = sch.get_sblock(last)
    try:
        sch.reverse_compute_inline(final)
        return "fused into the write-back"
    except ScheduleError:
        pass
    try:
        sch.reverse_compute_at(final, sch.get_loops(sch.get_sblock(info.block))[0])
        return "computed under the matmul's outer loop"
    except ScheduleError as err:
        log.info("epilogue of %s left separate: %s", info.block, err)
        return "separate pass"


def schedule_matmul(func: tvm.tirx.PrimFunc, info: MatmulFunc, variant: str,
                    facts: HostFacts, *, b_constant: bool = False) -> tuple[tvm.tirx.PrimFunc, str, dict[str, Any]]:
    """``func`` with its matmul scheduled by ``variant`` and its epilogue fused; also where the epilogue
    went and the variant's decisions. ``b_constant``: B is a weight the caller packs once (see
    :mod:`.prepack`), so a variant that packs B may read it pre-packed.

    Raises
    ------
    tvm.s_tir.ScheduleError
        The variant cannot schedule this block (the note names the function's matmul).
    """
    v = get_variant(variant)
    ctx = ScheduleContext(info.shape, info.dtype, info.layout, facts, block=info.block, slices=info.slices,
                          b_constant=b_constant)
    sch = Schedule(tvm.IRModule({"main": func}))
    try:
        v.apply(sch, ctx)
    except ScheduleError as err:
        err.add_note(f"variant {variant!r} failed on the fused matmul {info.describe()}")
        raise
    where = _fuse_epilogue(sch, info)
    decisions = v.decisions(ctx) if v.decisions else {}
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), where, decisions


def repeated_work(func: tvm.tirx.PrimFunc) -> str | None:
    """Which block, if any, sits under a parallel loop that none of its spatial axes is bound to.

    Every iteration of that loop then computes the block's whole output again, and where the buffer is
    shared they race on it. dlight's ``Reduction`` does this to a layer norm of one row: it runs the
    feature loop in parallel and recomputes the row's mean and variance under every feature (768 times,
    0.7 ms a call where the serial function takes microseconds).
    """
    sch = Schedule(tvm.IRModule({"main": func}))
    pending = list(sch.get_child_blocks(sch.get_sblock("root")))
    while pending:
        block = pending.pop()
        pending += sch.get_child_blocks(block)
        stmt = sch.get(block)
        spatial = [v for iv, v in zip(stmt.iter_vars, _realize(sch, block).iter_values) if int(iv.iter_type) == 0]
        for loop in map(sch.get, sch.get_loops(block)):
            static = isinstance(loop.extent, tvm.tirx.IntImm)
            extent = int(loop.extent) if static else loop.extent
            if int(loop.kind) != int(ForKind.PARALLEL) or (static and extent == 1):
                continue
            if not any(u.same_as(loop.loop_var) for v in spatial for u in undefined_vars(v, [])):
                return (f"block {stmt.name_hint!r} would be recomputed in each of the {extent} iterations of the "
                        f"parallel loop {loop.loop_var.name!r}, which none of its spatial axes is bound to")
    return None


def _injective(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """The stated default for a function of spatial blocks only: inline producers, parallel outer loops."""
    sch = Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if any(iv.iter_type != 0 for b in blocks for iv in sch.get(b).iter_vars):
        return None
    try:
        for b in blocks[:-1]:
            sch.compute_inline(b)
        loops = sch.get_loops(blocks[-1])
        outer = sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0]
        sch.parallel(outer)
    except ScheduleError:
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_module(mod: tvm.IRModule, schedule: str, *, facts: HostFacts | None = None,
                    target: tvm.target.Target | None = None,
                    root: str | Path | None = None) -> tuple[tvm.IRModule, list[FuncPlan], list[Packed]]:
    """Schedule every PrimFunc of a lowered module (see :func:`~.layer.lower`); the plans in name order, and
    the weights the compiled module takes packed (see :mod:`.prepack`; none under a :data:`REPACK` name).

    ``root`` is the tuning root the ``metaschedule`` schedule reads (default: the shipped one).

    Raises
    ------
    NoRecordError
        ``metaschedule``: a matmul function has no record of its own and no kernel record that replays on it.
    """
    check_schedule(schedule)
    schedule, prepack = split_schedule(schedule)
    facts = facts or host_facts()
    plans: dict[str, FuncPlan] = {}
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    constant = constant_args(mod) if prepack else {}
    changed: dict[str, tuple[int, int, str]] = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        name = gv.name_hint
        info = find_matmul(func)
        if schedule == NONE:
            plans[name] = FuncPlan(name, "matmul" if info else "other", NONE, info)
        elif info is not None and schedule == METASCHEDULE:
            new, where, decisions = tuned_function(task_of(name, func, info), facts, root)
            out[gv] = new
            plans[name] = FuncPlan(name, "matmul", schedule, info, where, decisions)
        elif info is not None:
            b = b_position(func, info)
            new, where, decisions = schedule_matmul(func, info, schedule, facts,
                                                    b_constant=b is not None and b in constant.get(name, ()))
            out[gv] = new
            plans[name] = FuncPlan(name, "matmul", schedule, info, where, decisions)
            if b is not None and list(new.params[b].shape) != list(func.params[b].shape):  # B's layout changed
                changed[name] = (b, decisions["jpack"], info.layout)
    if schedule != NONE:
        target = target or facts.target()
        refused: dict[str, str] = {}
        for gv, func in list(out.functions.items()):
            if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint not in plans:
                new = row_schedule(func, facts.simd_lanes_fp32)
                if new is not None and repeated_work(new) is None:
                    out[gv] = new
                    plans[gv.name_hint] = FuncPlan(gv.name_hint, "reduction", ROWS)
        with target:
            for rule in DLIGHT_RULES:
                before = {gv.name_hint: f for gv, f in out.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
                out = dl.ApplyDefaultSchedule(getattr(dl.cpu, rule)())(out)
                for gv, f in list(out.functions.items()):
                    if gv.name_hint in before and gv.name_hint not in plans and not f.same_as(before[gv.name_hint]):
                        repeated = repeated_work(f)
                        if repeated:  # keep the function as it was; the next rule or the default may do better
                            out[gv] = before[gv.name_hint]
                            refused[gv.name_hint] = f"dlight.cpu.{rule} refused: {repeated}"
                            continue
                        plans[gv.name_hint] = FuncPlan(gv.name_hint, "reduction", f"dlight.cpu.{rule}")
        for gv, func in list(out.functions.items()):
            if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint not in plans:
                new = _injective(func)
                if new is None:
                    why = {"refused": refused[gv.name_hint]} if gv.name_hint in refused else {}
                    plans[gv.name_hint] = FuncPlan(gv.name_hint, "other", "as lowered", decisions=why)
                else:
                    out[gv] = new
                    plans[gv.name_hint] = FuncPlan(gv.name_hint, "injective", "inline + parallel outer loops")
    out, packed = relayout(out, changed)
    for p in packed:
        plans[p.primfunc].prepacked += (p.name,)
    return out, [plans[k] for k in sorted(plans)], packed


__all__ = ["DLIGHT_RULES", "FAMILIES", "METASCHEDULE", "NONE", "REPACK", "ROWS", "FuncPlan", "check_schedule",
           "repeated_work", "schedule_matmul", "schedule_module", "schedule_names", "split_schedule"]
