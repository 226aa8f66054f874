"""MetaSchedule: tuning into one database per CPU profile, lookups, traces, and the ``metaschedule`` variant.

* :mod:`.database`: the per-profile database files, checked reads, the
  ledger, pruning and lookups;
* :mod:`.tune`: resumable tuning (locally or through an RPC tracker);
* :mod:`.traces`: what MetaSchedule chose, read from its records' traces;
* :mod:`.transfer`: another profile's records, rebuilt for this host;
* :mod:`.gpu`: CUDA databases (one per GPU, measured on a GPU only) and ``metaschedule_gpu``.

Importing this package registers ``metaschedule``: the running profile's
fastest record for the shape, replayed on the canonical kernel. A shape
without a record is unavailable, with the command that tunes it.
``metaschedule[from=PROFILE]`` replays another CPU profile's records instead
(the fastest that builds and verifies here; see :mod:`.transfer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvm.s_tir import Schedule

from ...core.registry import (
    ScheduleContext,
    Variant,
    VariantNameError,
    register_parametric,
)
from ...core.store import profile_dir, workload_key
from ...core.workloads import identify
from .database import (
    RECORD_FILE,
    DatabaseError,
    NoRecordError,
    apply_record,
    best_record,
    best_schedule,
    check_database_files,
    has_record,
    records,
    tune_command,
)
from .traces import record_decisions
from .transfer import (
    TransferError,
    check_source,
    profiles,
    transfer_decisions,
    transferred,
)

#: The registry name of the family's variant.
NAME = "metaschedule"


def _best(ctx: ScheduleContext):
    return records(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)[0]


def _apply(sch: Schedule, ctx: ScheduleContext) -> None:
    apply_record(sch, _best(ctx))


def _decisions(ctx: ScheduleContext) -> dict[str, Any]:
    return record_decisions(_best(ctx), ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)


def _what(ctx: ScheduleContext) -> tuple[str, dict[str, Any]]:
    """The case in words (``mlp_expand M=16 NN``) and the kernel's name for the tune command."""
    model, kernel = identify(ctx.shape)
    named = {"kernel": kernel, "M": ctx.shape.M, "model": model} if model else {}
    what = f"{kernel} M={ctx.shape.M}" if model else str(ctx.shape)
    if model and model != "bert-base":
        what = f"{model} {what}"
    dtype = "" if ctx.dtype == "float32" else f" {ctx.dtype}"
    return f"{what} {ctx.layout}{dtype}", named


def _files_problem(pdir: Path, ctx: ScheduleContext) -> str | None:
    try:  # files only: every line checked in Python, so a bad one skips this case instead of crashing TVM
        check_database_files(pdir / workload_key(ctx.shape, ctx.dtype, ctx.layout))
    except DatabaseError as err:
        return str(err)
    return None


def _available(ctx: ScheduleContext) -> str | None:
    if has_record(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts):
        return _files_problem(profile_dir(ctx.facts), ctx)
    what, named = _what(ctx)
    return (f"no {NAME} record for {what} in {profile_dir(ctx.facts)}; tune it with "
            f"`{tune_command(ctx.shape, ctx.dtype, ctx.layout, **named)}`")


_OWN = Variant(
    NAME, "search", _apply,
    lambda facts: f"MetaSchedule's fastest record for the shape, from the {facts.profile} database",
    decisions=_decisions, needs_record=True, available=_available,
)


def _transferred_variant(source: str) -> Variant:
    """``metaschedule[from=source]``: the source profile's fastest record that builds and verifies here."""

    def pick(ctx: ScheduleContext):
        return transferred(ctx.shape, source=source, facts=ctx.facts, dtype=ctx.dtype, layout=ctx.layout)

    def available(ctx: ScheduleContext) -> str | None:
        pdir = check_source(source)
        if (pdir / workload_key(ctx.shape, ctx.dtype, ctx.layout) / RECORD_FILE).is_file():
            return _files_problem(pdir, ctx)
        what, _ = _what(ctx)
        return f"profile {source} has no {NAME} record for {what} in {pdir}"

    return Variant(
        f"{NAME}[from={source}]", "search", lambda sch, ctx: apply_record(sch, pick(ctx).record),
        lambda facts: (f"MetaSchedule's fastest record for the shape from the {source} database that builds and "
                       f"verifies for {facts.profile}"),
        decisions=lambda ctx: transfer_decisions(pick(ctx), ctx.shape, facts=ctx.facts, dtype=ctx.dtype,
                                                 layout=ctx.layout),
        needs_record=True, available=available, info_keys=("from_profile", "skipped_records"),
    )


def _variant(knobs: dict[str, Any]) -> Variant:
    if not knobs:
        return _OWN
    unknown = sorted(set(knobs) - {"from"})
    if unknown:
        raise VariantNameError(f"{NAME} takes one knob, from=PROFILE (a profile with a database: "
                               f"{', '.join(profiles()) or 'none'}); got {', '.join(unknown)}")
    check_source(knobs["from"])
    return _transferred_variant(knobs["from"])


register_parametric(NAME, _variant)

from . import gpu  # noqa: E402, F401  (registers metaschedule_gpu, after the CPU variant)

__all__ = [
    "DatabaseError", "NoRecordError", "TransferError", "apply_record", "best_record", "best_schedule", "has_record",
    "profiles", "records", "transferred", "tune_command",
]
