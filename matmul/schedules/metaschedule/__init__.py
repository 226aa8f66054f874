"""MetaSchedule: tuning into one database per CPU profile, lookups, traces, and the ``metaschedule`` variant.

* :mod:`.database`: the per-profile database files, checked reads, the
  ledger, pruning and lookups;
* :mod:`.tune`: resumable tuning (locally or through an RPC tracker);
* :mod:`.traces`: what MetaSchedule chose, read from its records' traces.

Importing this package registers ``metaschedule``: the running profile's
fastest record for the shape, replayed on the canonical kernel. A shape
without a record is unavailable, with the command that tunes it.
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule

from ...core.registry import ScheduleContext, Variant, register
from ...core.store import profile_dir, workload_key
from ...core.workloads import identify
from .database import (
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

#: The registry name of the family's variant.
NAME = "metaschedule"


def _best(ctx: ScheduleContext):
    return records(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)[0]


def _apply(sch: Schedule, ctx: ScheduleContext) -> None:
    apply_record(sch, _best(ctx))


def _decisions(ctx: ScheduleContext) -> dict[str, Any]:
    return record_decisions(_best(ctx), ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts)


def _available(ctx: ScheduleContext) -> str | None:
    if has_record(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=ctx.facts):
        try:  # files only: every line checked in Python, so a bad one skips this case instead of crashing TVM
            check_database_files(profile_dir(ctx.facts) / workload_key(ctx.shape, ctx.dtype, ctx.layout))
        except DatabaseError as err:
            return str(err)
        return None
    model, kernel = identify(ctx.shape)
    named = {"kernel": kernel, "M": ctx.shape.M, "model": model} if model else {}
    what = f"{kernel} M={ctx.shape.M}" if model else str(ctx.shape)
    if model and model != "bert-base":
        what = f"{model} {what}"
    dtype = "" if ctx.dtype == "float32" else f" {ctx.dtype}"
    return (f"no {NAME} record for {what} {ctx.layout}{dtype} in {profile_dir(ctx.facts)}; tune it with "
            f"`{tune_command(ctx.shape, ctx.dtype, ctx.layout, **named)}`")


register(Variant(
    NAME, "search", _apply,
    lambda facts: f"MetaSchedule's fastest record for the shape, from the {facts.profile} database",
    decisions=_decisions, needs_record=True, available=_available,
))

__all__ = [
    "DatabaseError", "NoRecordError", "apply_record", "best_record", "best_schedule", "has_record", "records",
    "tune_command",
]
