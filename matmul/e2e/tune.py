"""MetaSchedule for a whole layer: every matmul function of the lowered model tuned as its own task.

A Relax model's matmuls are fused functions (the matmul with its bias, GELU, scaling or residual), and
batched ones for attention, so their MetaSchedule workloads are not the canonical kernel's: MetaSchedule
finds records by a workload's structure. Each such function is a *task*, tuned into
``tuning_db/<profile>/e2e/<task key>/`` (a kernel folder's two JSON-lines files), resumably: a run works
in ``e2e/.staging/<key>/``, where MetaSchedule appends each measured batch; started again after a kill,
it keeps the complete lines there and measures only the rest; a finished task's files replace its
folder by atomic copies. Records are never pruned here, so a task's trials are its record lines.

The ``metaschedule`` schedule of the pass replays each task's fastest record on its function. For a
task whose matmul has the slice shape and layout of a tuned kernel, :func:`kernel_reuse` tries the
kernel's fastest record on the fused function and says whether it replays; a task with no record of
its own uses the kernel's record only when it does.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ..core.hardware import HostFacts, host_facts
from ..core.store import atomic_copy, profile_dir, workload_key, write_profile_facts
from ..core.workloads import positive_int
from ..schedules.metaschedule.database import (
    DAMAGED,
    FAILED_RUN_S,
    RECORD_FILE,
    STAGING,
    WORKLOAD_FILE,
    DatabaseError,
    NoRecordError,
    apply_record,
    check_database_files,
    check_record_targets,
    has_record,
    module_records,
    records,
    timed_records,
)
from ..schedules.metaschedule.lock import profile_lock
from ..schedules.metaschedule.resume import module_hash, salvage_staging_file
from ..schedules.metaschedule.tune import SearchSettings, tune_module
from .detect import MatmulFunc, find_matmul
from .layer import LayerSpec, export, lower

log = logging.getLogger(__name__)

#: The folder of a profile that holds the layer tasks' records.
E2E_DIR = "e2e"
#: Measured trials per task when none are given.
TRIALS = 64


@dataclass(frozen=True)
class Task:
    """One matmul function of a lowered model, as MetaSchedule tunes it."""

    name: str  # the PrimFunc's name in the lowered module
    key: str  # its folder under e2e/
    mod: tvm.IRModule  # the function alone, as ``main``
    info: MatmulFunc
    symbol: str | None  # the function's own global symbol, given back after scheduling


def task_of(name: str, func: tvm.tirx.PrimFunc, info: MatmulFunc) -> Task:
    """The task of one matmul function: its module and a key naming its matmul and structure."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    s = info.shape
    batch = "B" + "x".join(map(str, info.batch)) + "-" if info.batch else ""
    key = (f"{info.layout}-{info.dtype}-{batch}M{s.M}-K{s.K}-N{s.N}-e{len(info.epilogue)}-"
           f"{module_hash(mod) & 0xFFFFFFFF:08x}")
    symbol = func.attrs.get("global_symbol") if func.attrs is not None else None
    return Task(name, key, mod, info, None if symbol is None else str(symbol))


def layer_tasks(lowered: tvm.IRModule) -> list[Task]:
    """Every matmul function of a lowered module (see :func:`~.layer.lower`) as a task, in name order."""
    out = []
    for gv, func in sorted(lowered.functions.items(), key=lambda kv: kv[0].name_hint):
        info = find_matmul(func) if isinstance(func, tvm.tirx.PrimFunc) else None
        if info is not None:
            out.append(task_of(gv.name_hint, func, info))
    return out


def tune_layer_command(spec: LayerSpec, trials: int = TRIALS) -> str:
    return (f"python -m matmul e2e --model {spec.config.name} --seq {spec.seq} --batch {spec.batch} "
            f"--schedule metaschedule --tune {trials}")


def task_dir(task: Task, facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    return profile_dir(facts, root) / E2E_DIR / task.key


def task_records(task: Task, facts: HostFacts | None = None,
                 root: str | Path | None = None) -> list[ms.database.TuningRecord]:
    """The task's successful records in the profile's database, fastest first.

    Raises
    ------
    NoRecordError
        The task has no folder or no successful record.
    DatabaseError
        A file is corrupt, holds another workload, or a record was tuned for another target.
    """
    facts = facts or host_facts()
    shard = task_dir(task, facts, root)
    if (shard / RECORD_FILE).is_file():
        check_database_files(shard)
    out = module_records(shard, task.mod, f"the layer's task {task.key} ({task.info.describe()})")
    check_record_targets(shard, out, facts)
    return out


def _replays(mod: tvm.IRModule, record: ms.database.TuningRecord) -> tuple[Schedule | None, str]:
    sch = Schedule(mod)
    try:
        apply_record(sch, record)
    except (RuntimeError, ValueError) as err:  # ScheduleError and TVM's errors are RuntimeErrors
        return None, str(err).strip().splitlines()[0][:200]
    return sch, ""


def _kernel_replay(task: Task, facts: HostFacts | None,
                   root: str | Path | None) -> tuple[dict[str, Any], Schedule | None, ms.database.TuningRecord | None]:
    """:func:`kernel_reuse`'s answer, with the replayed schedule and the record when it replays."""
    info = task.info
    if info.batch:
        why = "a batched matmul: no canonical kernel has its loops"
        return {"kernel": None, "reused": False, "why": why}, None, None
    key = workload_key(info.shape, info.dtype, info.layout)
    if not has_record(info.shape, dtype=info.dtype, layout=info.layout, facts=facts, root=root):
        return {"kernel": key, "kernel_tuned": False, "reused": False, "why": "this kernel is not tuned here"}, \
            None, None
    rec = records(info.shape, dtype=info.dtype, layout=info.layout, facts=facts, root=root)[0]
    sch, why = _replays(task.mod, rec)
    answer = {"kernel": key, "kernel_tuned": True, "kernel_run_us": 1e6 * min(float(x) for x in rec.run_secs),
              "reused": sch is not None,
              "why": "" if sch is not None else f"the kernel's record does not replay on the fused function: {why}"}
    return answer, sch, rec if sch is not None else None


def kernel_reuse(task: Task, facts: HostFacts | None = None, root: str | Path | None = None) -> dict[str, Any]:
    """Whether the task's matmul is a tuned kernel of this profile, and whether that record replays on it."""
    return _kernel_replay(task, facts, root)[0]


def tuned_function(task: Task, facts: HostFacts | None = None,
                   root: str | Path | None = None) -> tuple[tvm.tirx.PrimFunc, str, dict[str, Any]]:
    """The task's function scheduled by its fastest record (or by its kernel's, when that replays); where the
    epilogue went; and the decisions.

    Raises
    ------
    NoRecordError
        Neither the task nor a kernel record that replays on it.
    """
    reuse, kernel_sch, kernel_rec = _kernel_replay(task, facts, root)
    try:
        recs = task_records(task, facts, root)
        sch, why = _replays(task.mod, recs[0])
        if sch is None:
            raise DatabaseError(f"the fastest record of {task_dir(task, facts, root)} does not replay: {why}")
        source, rec, trials = "task", recs[0], len(timed_records(task_dir(task, facts, root) / RECORD_FILE))
    except NoRecordError as err:
        if kernel_sch is None:
            raise NoRecordError(f"{err}; kernel record: {reuse['why'] or reuse['kernel']}") from None
        source, rec, sch, trials = "kernel", kernel_rec, kernel_sch, None
    func = sch.mod["main"]
    where = _epilogue_place(sch, task.info)
    decisions = {"task": task.key, "record_source": source, "task_trials": trials,
                 "record_run_us": 1e6 * min(float(x) for x in rec.run_secs), "kernel_record": reuse}
    func = func.with_attr("global_symbol", task.symbol) if task.symbol else func.without_attr("global_symbol")
    return func.with_attr("tirx.is_scheduled", True), where, decisions


def _epilogue_place(sch: Schedule, info: MatmulFunc) -> str:
    """Where a replayed record put the epilogue: inlined, under the matmul's outer loop, or its own pass."""
    if not info.epilogue:
        return ""
    text = sch.mod["main"].script()
    kept = [b for b in info.epilogue if f'sblock("{b}")' in text]
    if not kept:
        return "inlined into the matmul by the record"
    names = [n for n in (info.block, info.block + "_update") if f'sblock("{n}")' in text]  # decomposed or not
    try:
        outer = sch.get(sch.get_loops(sch.get_sblock(names[0]))[0])
        apart = [b for b in kept if not sch.get(sch.get_loops(sch.get_sblock(b))[0]).same_as(outer)]
    except (RuntimeError, ValueError, IndexError):  # the record renamed or removed the matmul block
        return f"kept by the record: {', '.join(kept)}"
    if apart:
        return f"a separate pass (the record left {', '.join(apart)} outside the matmul's loops)"
    return "computed under the matmul's outer loop by the record"


@dataclass
class TaskOutcome:
    """What :func:`tune_layer` did for one task."""

    key: str
    name: str
    describe: str
    trials_before: int
    trials_now: int
    seconds: float
    best_gflops: float | None
    skipped: bool = False


def _count(shard: Path) -> int:
    if not (shard / RECORD_FILE).is_file():
        return 0
    check_database_files(shard)
    return len(timed_records(shard / RECORD_FILE))


def _tune_task(task: Task, pdir: Path, *, trials: int, facts: HostFacts, search: SearchSettings,
               emit: Callable[[str], None], label: str) -> TaskOutcome:
    shard, staging = pdir / E2E_DIR / task.key, pdir / E2E_DIR / STAGING / task.key
    before = _count(shard)
    if staging.is_dir():  # a killed run: keep its complete lines and go on from them
        for name in (WORKLOAD_FILE, RECORD_FILE):
            salvage_staging_file(staging / name, pdir / E2E_DIR / DAMAGED)
    elif before >= trials:
        emit(f"{label}: {before} trials already (asked {trials}); skipped")
        return TaskOutcome(task.key, task.name, task.info.describe(), before, before, 0.0, None, skipped=True)
    else:
        staging.mkdir(parents=True)
        if (shard / RECORD_FILE).is_file():  # continue from the records kept; they seed the search
            for name in (WORKLOAD_FILE, RECORD_FILE):
                shutil.copyfile(shard / name, staging / name)
    done = [_count(staging) if (staging / RECORD_FILE).is_file() else 0]
    t0 = time.monotonic()
    flops = task.info.flops()

    def on_batch(n: int, best: float | None) -> None:
        done[0] += n
        gf = "-" if best is None else f"{flops / best / 1e9:.1f}"
        emit(f"{label}: trials {done[0]}/{trials}, batch best {gf} GFLOP/s, {time.monotonic() - t0:.0f} s on it")

    if trials - done[0] > 0:
        emit(f"{label}: tuning {trials - done[0]} trials ({done[0]} measured before)")
        tune_module(task.mod, staging, trials=trials - done[0], facts=facts, search=search, on_batch=on_batch)
    times = [t for _, t in timed_records(staging / RECORD_FILE) if t < FAILED_RUN_S]
    shard.mkdir(parents=True, exist_ok=True)
    atomic_copy(staging / WORKLOAD_FILE, shard / WORKLOAD_FILE)  # workloads first: records refer to them
    atomic_copy(staging / RECORD_FILE, shard / RECORD_FILE)
    shutil.rmtree(staging)
    return TaskOutcome(task.key, task.name, task.info.describe(), before, _count(shard), time.monotonic() - t0,
                       flops / min(times) / 1e9 if times else None)


def tune_layer(spec: LayerSpec, *, trials: int = TRIALS, facts: HostFacts | None = None,
               root: str | Path | None = None, search: SearchSettings = SearchSettings(),
               emit: Callable[[str], None] = log.info) -> list[TaskOutcome]:
    """Bring every matmul task of the layer up to ``trials`` measured trials in the profile's database."""
    return tune_tasks(layer_tasks(lower(export(spec)[0])), trials=trials, facts=facts, root=root, search=search,
                      emit=emit)


def tune_tasks(tasks: list[Task], *, trials: int = TRIALS, facts: HostFacts | None = None,
               root: str | Path | None = None, search: SearchSettings = SearchSettings(),
               emit: Callable[[str], None] = log.info) -> list[TaskOutcome]:
    """Bring each task up to ``trials`` measured trials in the profile's database, in turn."""
    positive_int(trials, "trials")
    facts = facts or host_facts()
    pdir = profile_dir(facts, root)
    out = []
    with profile_lock(pdir):
        write_profile_facts(facts, root)
        for i, task in enumerate(tasks, 1):
            label = f"[{i}/{len(tasks)}] {task.name} ({task.info.describe()})"
            out.append(_tune_task(task, pdir, trials=trials, facts=facts, search=search, emit=emit, label=label))
    return out


__all__ = ["E2E_DIR", "TRIALS", "Task", "TaskOutcome", "kernel_reuse", "layer_tasks", "task_dir", "task_of",
           "task_records", "tune_layer", "tune_layer_command", "tune_tasks", "tuned_function"]
