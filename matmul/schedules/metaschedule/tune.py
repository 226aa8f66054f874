"""MetaSchedule tuning into the per-profile database, resumable after any kill.

A run tunes in ``.staging/<key>/``, where MetaSchedule appends each measured
batch. Killed at any point (SIGKILL included) and started again, it reopens
that folder, counts the trials already measured there and tunes only the rest.
A finished run's files replace the workload's folder by atomic renames, and
the ledger is rewritten atomically after that. The only repair ever made is
to a staging file whose last line a kill cut short: the damaged file is kept
beside it, the complete lines are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms

from ...core.hardware import HostFacts, configure_runtime_threads, host_facts
from ...core.intrinsics import import_table
from ...core.kernel import matmul_module
from ...core.store import (
    atomic_copy,
    atomic_write,
    profile_dir,
    workload_key,
    write_profile_facts,
)
from ...core.workloads import MatmulShape, positive_int
from .database import (
    DAMAGED,
    FAILED_RUN_S,
    POPULATION,
    RECORD_FILE,
    STAGING,
    TRIALS_PER_ITER,
    WORKLOAD_FILE,
    DatabaseError,
    LedgerEntry,
    check_database_files,
    check_jsonl,
    read_ledger,
    timed_records,
    write_ledger,
)
from .lock import profile_lock
from .resume import SkipMeasured, measured_hashes, salvage_staging_file, staged_trials, trials_done
from .workers import shared_builder, shared_runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RPCSettings:
    """Measure on a remote machine through a TVM RPC tracker."""

    host: str
    port: int
    key: str
    session_timeout_s: int = 60

    def runner(self) -> ms.runner.RPCRunner:
        config = ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                                     session_timeout_sec=self.session_timeout_s)
        return ms.runner.RPCRunner(config, max_workers=1)


#: Tensor-intrinsic modules a CPU target's default MetaSchedule rules may ask
#: for, by architecture (x86 VNNI/AVX-512 dot products, ARM dot/SVE).
_CPU_INTRINSICS = {"x86_64": ("x86",), "i686": ("x86",), "aarch64": ("arm_cpu",), "arm64": ("arm_cpu",),
                   "riscv64": ("riscv_cpu",)}


def _register_cpu_intrinsics(facts: HostFacts) -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` load only this CPU's intrinsics.

    Every ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose
    ``__init__`` builds every table, CUDA's included: 25 s on the 2-core
    machine, 40 s or more while it is busy, in every process that tunes. A
    CPU target's rules need only its own architecture's table, so the package
    is registered empty and that submodule imported; any other submodule can
    still be imported by name later.
    """
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    pkg = types.ModuleType(name, "CPU tensor intrinsics only (see matmul.schedules.metaschedule.tune)")
    pkg.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    pkg.__package__ = name
    sys.modules[name] = pkg
    for sub in _CPU_INTRINSICS.get(facts.arch, ()):
        setattr(pkg, sub, import_table(f"{name}.{sub}"))


def _unnamed_log_handlers_off() -> None:
    """Detach unnamed handlers from MetaSchedule's logger before it sets itself up.

    Each tuning run rebuilds that logger's configuration from the names of the
    handlers it already has, and fails (``None.format``) on one without a name,
    such as pytest's log capture, which attaches to it after a first run.
    """
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_log.handlers):
        if handler.get_name() is None:
            ms_log.removeHandler(handler)


@contextlib.contextmanager
def _log_level_kept():
    """Keep MetaSchedule's logger at the level the caller gave it, over a tuning run.

    Each run configures that logger from its current level (which sets its
    console handler's level) and then sets the logger itself to DEBUG, so from
    the second run in a process on, every task table and cost-model line went
    to stdout even when the caller had asked for warnings only.
    """
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    level = ms_log.level
    try:
        yield
    finally:
        ms_log.setLevel(level)


@dataclass(frozen=True)
class SearchSettings:
    """How MetaSchedule searches and measures; the same for every workload of a run.

    Attributes
    ----------
    per_iter : int
        Trials measured, and saved, per search iteration.
    population : int
        Candidates per generation of the evolutionary search.
    seed : int, optional
        MetaSchedule's random seed (default: random).
    rpc : RPCSettings, optional
        Measure through a TVM RPC tracker instead of on this machine.
    """

    per_iter: int = TRIALS_PER_ITER
    population: int = POPULATION
    seed: int | None = None
    rpc: RPCSettings | None = None

    def __post_init__(self) -> None:
        positive_int(self.per_iter, "per_iter")
        positive_int(self.population, "population")


def _progress_callback(on_batch: Callable[[int, float | None], None]):
    """A MetaSchedule measure callback that reports (trials in the batch, best run time in it)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            times = [sum(float(x) for x in r.run_secs) / len(r.run_secs)
                     for r in runner_results if r.run_secs is not None and r.error_msg is None]
            on_batch(len(runner_results), min(times) if times else None)

    return _Progress()


def tune(shape: MatmulShape, work_dir: str | Path, *, trials: int, dtype: str = "float32", layout: str = "NN",
         facts: HostFacts | None = None, search: SearchSettings = SearchSettings(),
         on_batch: Callable[[int, float | None], None] | None = None) -> ms.database.JSONDatabase:
    """Run MetaSchedule on one canonical matmul; records are appended to ``work_dir`` (see :func:`tune_module`)."""
    return tune_module(matmul_module(shape, dtype, layout), work_dir, trials=trials, facts=facts, search=search,
                       on_batch=on_batch)


def tune_module(mod: tvm.IRModule, work_dir: str | Path, *, trials: int, facts: HostFacts | None = None,
                search: SearchSettings = SearchSettings(),
                on_batch: Callable[[int, float | None], None] | None = None) -> ms.database.JSONDatabase:
    """Run MetaSchedule on one module's ``main``; records are appended to ``work_dir``.

    This is the plain MetaSchedule call: no ledger, no staging (see
    :func:`tune_workload` for those). Existing files are checked first and
    never replaced; a schedule they already hold is not measured again.
    """
    positive_int(trials, "trials")
    facts = facts or host_facts()
    configure_runtime_threads()
    _register_cpu_intrinsics(facts)
    _unnamed_log_handlers_off()
    work_dir = Path(work_dir)
    if any((work_dir / name).exists() for name in (WORKLOAD_FILE, RECORD_FILE)):
        check_database_files(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    callbacks = ms.measure_callback.MeasureCallback.create("default")
    if on_batch is not None:
        callbacks = [*callbacks, _progress_callback(on_batch)]
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=search.population, init_min_unmeasured=min(50, search.population))
    known = measured_hashes(work_dir)
    if known:  # a resumed run: never measure again what the folder holds
        strategy = SkipMeasured(strategy, known)
    with _log_level_kept():
        return ms.tune_tir(
            mod,
            facts.target(),
            work_dir=str(work_dir),
            max_trials_global=trials,
            num_trials_per_iter=min(trials, search.per_iter),
            builder=shared_builder(),
            runner=search.rpc.runner() if search.rpc else shared_runner(),
            measure_callbacks=callbacks,
            strategy=strategy,
            seed=search.seed,
        )


@dataclass
class TuneOutcome:
    """What :func:`tune_workload` did for one workload."""

    key: str
    trials_before: int
    trials_now: int
    seconds: float
    best_gflops: float | None
    skipped: bool = False


@dataclass
class Progress:
    """Progress over several workloads, for the ``tune`` command's status lines."""

    total_workloads: int
    trials_left: int  # trials still to measure over all workloads, at the start
    index: int = 0
    started: float = field(default_factory=time.monotonic)
    measured: int = 0
    emit: Callable[[str], None] = log.info

    def eta(self) -> str:
        if not self.measured:
            return "?"
        left = (time.monotonic() - self.started) / self.measured * max(self.trials_left - self.measured, 0)
        return f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"


def tune_workload(
    shape: MatmulShape,
    *,
    trials: int,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    root: str | Path | None = None,
    search: SearchSettings = SearchSettings(),
    label: str | None = None,
    progress: Progress | None = None,
) -> TuneOutcome:
    """Bring one workload's record count up to ``trials`` in its profile's database.

    A workload that already has ``trials`` measured trials is left alone;
    one with fewer (an earlier, smaller budget, or a run that was killed)
    continues from its records.
    """
    facts = facts or host_facts()
    with profile_lock(profile_dir(facts, root)):
        return _tune_workload(shape, trials=trials, dtype=dtype, layout=layout, facts=facts, root=root,
                              search=search, label=label, progress=progress)


def _tune_workload(shape: MatmulShape, *, trials: int, dtype: str, layout: str, facts: HostFacts,
                   root: str | Path | None, search: SearchSettings, label: str | None,
                   progress: Progress | None) -> TuneOutcome:
    positive_int(trials, "trials")
    facts = facts or host_facts()
    pdir = profile_dir(facts, root)
    key = workload_key(shape, dtype, layout)
    label = label or key
    ledger = read_ledger(pdir)
    entry = ledger.get(key) or LedgerEntry(shape.M, shape.K, shape.N, layout, dtype, target=str(facts.target()))
    shard, staging = pdir / key, pdir / STAGING / key
    base_file = staging / "run.json"

    if staging.is_dir() and base_file.is_file():
        try:
            run = json.loads(base_file.read_text(encoding="utf-8"))
            run["id"], run["copied"]  # noqa: B018 - both keys must be there
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatabaseError(f"staging run file {base_file} is corrupt ({type(err).__name__}); it was left "
                                f"untouched: move {staging} away to drop that run, then tune again") from None
        if run["id"] in entry.runs:  # merged before a kill: only the clean-up was left
            shutil.rmtree(staging)
            return _tune_workload(shape, trials=trials, dtype=dtype, layout=layout, facts=facts, root=root,
                                  search=search, label=label, progress=progress)
        for name in (WORKLOAD_FILE, RECORD_FILE):
            salvage_staging_file(staging / name, pdir / DAMAGED)
        run["seconds"] = run.get("seconds", 0.0) + run.pop("seconds_now", 0.0)  # the killed run's time
    else:
        if entry.trials >= trials:
            if progress:
                progress.emit(f"[{progress.index}/{progress.total_workloads}] {label}: {entry.trials} trials "
                              f"already (asked {trials}), best {_fmt(entry.best_gflops)} GFLOP/s; skipped")
            return TuneOutcome(key, entry.trials, entry.trials, 0.0, entry.best_gflops, skipped=True)
        if shard.is_dir():
            check_database_files(shard)
            timed_records(shard / RECORD_FILE)
        if staging.exists():  # a staging folder without its run file: a kill before anything was measured
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        copied = 0
        if shard.is_dir():  # continue from the kept records (they seed the search)
            for name in (WORKLOAD_FILE, RECORD_FILE):
                shutil.copyfile(shard / name, staging / name)
            copied = check_jsonl(staging / RECORD_FILE)
        run = {"id": uuid.uuid4().hex, "copied": copied, "seconds": 0.0}
        atomic_write(base_file, json.dumps(run) + "\n")

    before = entry.trials
    staged = staged_trials(staging, run)
    remaining = trials - before - staged
    t0 = time.monotonic()
    best = [entry.best_s]
    done = [before + staged]

    def on_batch(n: int, batch_best: float | None) -> None:
        done[0] += n
        if batch_best is not None and (best[0] is None or batch_best < best[0]):
            best[0] = batch_best
        run["seconds_now"] = time.monotonic() - t0
        atomic_write(base_file, json.dumps(run) + "\n")
        if progress:
            progress.measured += n
            gf = None if best[0] is None else shape.flops / best[0] / 1e9
            progress.emit(f"[{progress.index}/{progress.total_workloads}] {label}: trials {done[0]}/{trials}, "
                          f"best {_fmt(gf)} GFLOP/s, {time.monotonic() - t0:.0f} s on it, ~{progress.eta()} left")

    if remaining > 0:
        if progress:
            progress.emit(f"[{progress.index}/{progress.total_workloads}] {label}: tuning {remaining} trials "
                          f"({before + staged} measured before)")
        tune(shape, staging, trials=remaining, dtype=dtype, layout=layout, facts=facts, search=search,
             on_batch=on_batch)
    elapsed = run.get("seconds", 0.0) + run.get("seconds_now", 0.0)
    # A kill before this line leaves everything in staging; a later run merges it.
    staged_records = timed_records(staging / RECORD_FILE)
    times = [t for _, t in staged_records if 0 < t < FAILED_RUN_S]  # the ledger refuses a best_s of 0
    shard.mkdir(parents=True, exist_ok=True)
    # workloads first: records only ever refer to workload lines that exist
    atomic_copy(staging / WORKLOAD_FILE, shard / WORKLOAD_FILE)
    atomic_copy(staging / RECORD_FILE, shard / RECORD_FILE)
    new = len(staged_records) - run["copied"]
    entry.trials = before + new
    entry.seconds += elapsed
    entry.best_s = min([*times, *([entry.best_s] if entry.best_s else [])], default=None)
    entry.kept = None  # the new records are all there until the next prune
    entry.runs.append(run["id"])
    entry.target = str(facts.target())
    ledger = read_ledger(pdir)
    ledger[key] = entry
    write_ledger(pdir, ledger)
    shutil.rmtree(staging)
    return TuneOutcome(key, before, entry.trials, elapsed, entry.best_gflops)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def tune_workloads(
    shapes: Iterable[tuple[str, MatmulShape]],
    *,
    trials: int,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    root: str | Path | None = None,
    search: SearchSettings = SearchSettings(),
    emit: Callable[[str], None] = log.info,
) -> list[TuneOutcome]:
    """Tune several (label, shape) workloads in turn, with progress lines through ``emit``."""
    positive_int(trials, "trials")
    facts = facts or host_facts()
    shapes = list(shapes)
    pdir = profile_dir(facts, root)
    ledger = read_ledger(pdir)
    left = sum(max(trials - trials_done(pdir, workload_key(s, dtype, layout), ledger), 0) for _, s in shapes)
    progress = Progress(len(shapes), left, emit=emit)
    out = []
    with profile_lock(profile_dir(facts, root)):  # held across the workloads: no other tune slips in between
        write_profile_facts(facts, root)
        for i, (label, shape) in enumerate(shapes, 1):
            progress.index = i
            out.append(tune_workload(shape, trials=trials, dtype=dtype, layout=layout, facts=facts, root=root,
                                     search=search, label=label, progress=progress))
    return out


__all__ = [
    "Progress", "RPCSettings", "SearchSettings", "TuneOutcome", "tune",
    "tune_module", "tune_workload", "tune_workloads",
]
