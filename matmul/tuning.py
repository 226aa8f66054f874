"""MetaSchedule tuning into one database folder per CPU profile, and lookups from it.

MetaSchedule's database lookup matches on the workload's structure only, not
on the target, so a record tuned on one CPU would be served to any other. The
records therefore live under ``<root>/<profile>/`` (see
:attr:`~matmul.hardware.HostFacts.profile`), one MetaSchedule JSON database
per workload inside it, plus a ledger::

    tuning_db/znver3-2c-simd8-t2/
        ledger.json                       trials, seconds and best time per workload
        NN-float32-M128-K768-N768/        MetaSchedule's two JSON-lines files
        .staging/NN-float32-M128-K768-N768/   a tuning run in progress
        .damaged/                         originals of staging files a kill cut short

Resumable: a run tunes in ``.staging/<key>/``, where MetaSchedule appends
each measured batch. Killed at any point (SIGKILL included) and started
again, it reopens that folder, counts the trials already measured there and
tunes only the rest. A finished run's files replace the workload's folder
by atomic renames, and the ledger is rewritten atomically after that. The
only repair ever made is to a staging file whose last line a kill cut short:
the damaged file is kept beside it, the complete lines are kept. A corrupt
database file or ledger anywhere else is reported with its path and left
untouched.

Lookups (:func:`best_record`) also check each record's target against the
facts asked for, so a record copied into the wrong profile folder is refused
instead of served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from .hardware import HostFacts, configure_runtime_threads, host_facts
from .kernel import check_dtype, check_layout, matmul_module
from .workloads import MatmulShape

log = logging.getLogger(__name__)

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LEDGER_FILE = "ledger.json"
STAGING = ".staging"
#: Where the damaged originals of salvaged staging files are kept.
DAMAGED = ".damaged"
#: Environment variable naming the folder that holds the per-profile databases.
ROOT_ENV = "MATMUL_TUNING_ROOT"
#: Trials per MetaSchedule iteration: the unit in which records are committed,
#: so at most this many measurements are lost to a kill. Each iteration also
#: pays one evolutionary search (about 35 s on 2 cores), so fewer, larger
#: batches tune faster and smaller ones report and save more often.
TRIALS_PER_ITER = 32
#: Candidates the evolutionary search keeps per generation (MetaSchedule's
#: default). Each generation mutates, post-processes and scores them all,
#: which dominates a small workload's tuning time.
POPULATION = 512
#: MetaSchedule's run time for a candidate that failed to build or run.
FAILED_RUN_S = 1e9
#: Records kept per workload by :func:`prune` unless told otherwise.
KEEP_DEFAULT = 5


class DatabaseError(RuntimeError):
    """A tuning database or ledger is missing, corrupt, or from another target."""


class NoRecordError(LookupError):
    """The profile's database holds no usable record for a workload."""


# --------------------------------------------------------------------------- where things live
def default_root() -> Path:
    """``$MATMUL_TUNING_ROOT``, else ``tuning_db/`` beside the ``matmul`` package (the shipped one)."""
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "tuning_db"


def profile_dir(facts: HostFacts | None = None, root: str | Path | None = None) -> Path:
    """The database folder for one CPU profile."""
    return Path(root or default_root()) / (facts or host_facts()).profile


def workload_key(shape: MatmulShape, dtype: str = "float32", layout: str = "NN") -> str:
    """A file-name-safe key for one workload, e.g. ``NN-float32-M128-K768-N768``."""
    return f"{check_layout(layout)}-{check_dtype(dtype)}-M{shape.M}-K{shape.K}-N{shape.N}"


def tune_command(shape: MatmulShape, dtype: str = "float32", layout: str = "NN", *, kernel: str | None = None,
                 M: int | None = None, model: str = "bert-base") -> str:
    """The command line that tunes this workload into the running profile's database."""
    if kernel is not None and M is not None:
        cmd = f"python -m matmul tune --kernels {kernel} --m-values {M}"
        if model != "bert-base":
            cmd += f" --model {model}"
    else:
        cmd = f"python -m matmul tune --shape {shape.M} {shape.K} {shape.N}"
    if layout != "NN":
        cmd += f" --layout {layout}"
    if dtype != "float32":
        cmd += f" --dtype {dtype}"
    return cmd


# --------------------------------------------------------------------------- checked file access
def _check_jsonl(path: Path) -> int:
    """Number of records in a JSON-lines file; DatabaseError on a bad line."""
    count = 0
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                raise DatabaseError(
                    f"tuning database file {path} is corrupt at line {lineno} ({err.msg}); "
                    "it was left untouched: repair or move it away, then tune again"
                ) from None
            count += 1
    return count


def check_database_files(work_dir: str | Path) -> tuple[Path, Path]:
    """Check that both database files exist and every line is JSON.

    Raises
    ------
    DatabaseError
        Naming the missing file, or the file and line that does not parse.
    """
    work_dir = Path(work_dir)
    paths = (work_dir / WORKLOAD_FILE, work_dir / RECORD_FILE)
    for path in paths:
        if not path.is_file():
            raise DatabaseError(
                f"tuning database file {path} does not exist; "
                "run `python -m matmul tune` to create the database, or point to the folder that holds "
                f"{WORKLOAD_FILE} and {RECORD_FILE}"
            )
        _check_jsonl(path)
    return paths


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """Open an existing database folder, after :func:`check_database_files`."""
    workload, record = check_database_files(work_dir)
    return ms.database.JSONDatabase(
        path_workload=str(workload), path_tuning_record=str(record), allow_missing=False
    )


def _atomic_write(path: Path, text: str) -> None:
    from .report import atomic_write

    atomic_write(path, text)


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` so that ``dst`` is always either old or new, never half."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    shutil.copyfile(src, tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)


def _salvage_staging_file(path: Path, keep_dir: Path) -> None:
    """Drop a last line that a kill cut short (no newline, not JSON); refuse any other damage.

    The damaged original is kept in ``keep_dir`` as ``<staging folder>-<name>.cut-<time>``.
    """
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        _check_jsonl(path)
        return
    head, _, tail = data.rpartition(b"\n")
    try:
        json.loads(tail)
    except json.JSONDecodeError:
        keep_dir.mkdir(parents=True, exist_ok=True)
        keep = keep_dir / f"{path.parent.name}-{path.name}.cut-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.copyfile(path, keep)
        _atomic_write(path, (head + b"\n").decode() if head else "")
        log.warning("%s ended in a line cut short by a kill; kept the complete lines, the original is %s",
                    path, keep)
    else:
        with path.open("ab") as fh:  # a whole record without its newline
            fh.write(b"\n")
    _check_jsonl(path)


# --------------------------------------------------------------------------- the ledger
@dataclass
class LedgerEntry:
    """What the ledger knows about one workload's tuning."""

    M: int
    K: int
    N: int
    layout: str
    dtype: str
    trials: int = 0  # measured trials, over every run (pruning does not lower it)
    seconds: float = 0.0  # wall time spent tuning
    best_s: float | None = None  # best measured run time
    kept: int | None = None  # records left after pruning; None = never pruned
    runs: list[str] = field(default_factory=list)  # ids of merged staging runs
    target: str = ""

    @property
    def shape(self) -> MatmulShape:
        return MatmulShape(self.M, self.K, self.N)

    @property
    def best_gflops(self) -> float | None:
        return None if self.best_s is None else self.shape.flops / self.best_s / 1e9


def read_ledger(pdir: Path) -> dict[str, LedgerEntry]:
    """The profile's ledger (empty if none). DatabaseError, naming the path, if it does not parse."""
    path = pdir / LEDGER_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {key: LedgerEntry(**entry) for key, entry in raw["workloads"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DatabaseError(
            f"tuning ledger {path} is corrupt ({type(err).__name__}: {err}); "
            "it was left untouched: repair or move it away, then tune again"
        ) from None


def _write_ledger(pdir: Path, ledger: dict[str, LedgerEntry]) -> None:
    doc = {"profile": pdir.name, "workloads": {k: asdict(v) for k, v in sorted(ledger.items())}}
    _atomic_write(pdir / LEDGER_FILE, json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- tuning
def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params=None) -> tvm.runtime.Module:
    """MetaSchedule's default CPU build, without importing ``tvm.s_tir.tensor_intrin``.

    The default build imports every tensor-intrinsic table (CUDA, ROCm,
    Hexagon, ARM) in each new builder worker: 24 s on the 2-core machine, 35 s
    with PyTorch installed, beyond the default 30 s timeout, so every
    candidate failed to build. Plain fp32 matmul on a CPU tensorizes nothing.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


#: Seconds a builder worker may take per candidate. The first candidate of a
#: fresh worker pays the worker's imports (TVM, and PyTorch when installed,
#: which tvm_ffi imports eagerly).
BUILD_TIMEOUT_S = 90


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
    import importlib
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    pkg = types.ModuleType(name, "CPU tensor intrinsics only (see matmul.tuning._register_cpu_intrinsics)")
    pkg.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    pkg.__package__ = name
    sys.modules[name] = pkg
    for sub in _CPU_INTRINSICS.get(facts.arch, ()):
        setattr(pkg, sub, importlib.import_module(f"{name}.{sub}"))


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


def _check_trials(trials: Any, what: str = "trials") -> int:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0:
        raise ValueError(f"{what} must be a positive integer, got {trials!r}")
    return trials


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
        _check_trials(self.per_iter, "per_iter")
        _check_trials(self.population, "population")


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


def tune(
    shape: MatmulShape,
    work_dir: str | Path,
    *,
    trials: int,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    search: SearchSettings = SearchSettings(),
    on_batch: Callable[[int, float | None], None] | None = None,
) -> ms.database.JSONDatabase:
    """Run MetaSchedule on one canonical matmul; records are appended to ``work_dir``.

    This is the plain MetaSchedule call: no ledger, no staging (see
    :func:`tune_workload` for those). Existing files are checked first and
    never replaced.
    """
    _check_trials(trials)
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
    with _log_level_kept():
        return ms.tune_tir(
            matmul_module(shape, dtype, layout),
            facts.target(),
            work_dir=str(work_dir),
            max_trials_global=trials,
            num_trials_per_iter=min(trials, search.per_iter),
            builder=ms.builder.LocalBuilder(f_build=build_candidate, timeout_sec=BUILD_TIMEOUT_S),
            runner=search.rpc.runner() if search.rpc else "local",
            measure_callbacks=callbacks,
            strategy=ms.search_strategy.EvolutionarySearch(
                population_size=search.population, init_min_unmeasured=min(50, search.population)),
            seed=search.seed,
        )


def _timed_records(path: Path) -> list[tuple[str, float]]:
    """Each record line of a record file with its mean run time (failed ones at ``FAILED_RUN_S`` or more)."""
    out = []
    if not path.is_file():
        return out
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            run_secs = json.loads(line)[1][1]
            out.append((line, sum(float(x) for x in run_secs) / len(run_secs) if run_secs else float("inf")))
        except (json.JSONDecodeError, IndexError, KeyError, TypeError, ValueError):
            raise DatabaseError(f"tuning database file {path} line {lineno} is not a MetaSchedule tuning record; "
                                "it was left untouched: repair or move it away") from None
    return out


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
    emit: Callable[[str], None] = print

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
    _check_trials(trials)
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
            return tune_workload(shape, trials=trials, dtype=dtype, layout=layout, facts=facts, root=root,
                                 search=search, label=label, progress=progress)
        for name in (WORKLOAD_FILE, RECORD_FILE):
            _salvage_staging_file(staging / name, pdir / DAMAGED)
        run["seconds"] = run.get("seconds", 0.0) + run.pop("seconds_now", 0.0)  # the killed run's time
    else:
        if entry.trials >= trials:
            if progress:
                progress.emit(f"[{progress.index}/{progress.total_workloads}] {label}: {entry.trials} trials "
                              f"already (asked {trials}), best {_fmt(entry.best_gflops)} GFLOP/s; skipped")
            return TuneOutcome(key, entry.trials, entry.trials, 0.0, entry.best_gflops, skipped=True)
        if shard.is_dir():
            check_database_files(shard)
            _timed_records(shard / RECORD_FILE)
        if staging.exists():  # a staging folder without its run file: a kill before anything was measured
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        copied = 0
        if shard.is_dir():  # continue from the kept records (they seed the search)
            for name in (WORKLOAD_FILE, RECORD_FILE):
                shutil.copyfile(shard / name, staging / name)
            copied = _check_jsonl(staging / RECORD_FILE)
        run = {"id": uuid.uuid4().hex, "copied": copied, "seconds": 0.0}
        _atomic_write(base_file, json.dumps(run) + "\n")

    before = entry.trials
    staged = len(_timed_records(staging / RECORD_FILE)) - run["copied"]
    remaining = trials - before - staged
    t0 = time.monotonic()
    best = [entry.best_s]
    done = [before + staged]

    def on_batch(n: int, batch_best: float | None) -> None:
        done[0] += n
        if batch_best is not None and (best[0] is None or batch_best < best[0]):
            best[0] = batch_best
        run["seconds_now"] = time.monotonic() - t0
        _atomic_write(base_file, json.dumps(run) + "\n")
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
    staged_records = _timed_records(staging / RECORD_FILE)
    times = [t for _, t in staged_records if t < FAILED_RUN_S]
    shard.mkdir(parents=True, exist_ok=True)
    # workloads first: records only ever refer to workload lines that exist
    _atomic_copy(staging / WORKLOAD_FILE, shard / WORKLOAD_FILE)
    _atomic_copy(staging / RECORD_FILE, shard / RECORD_FILE)
    new = len(staged_records) - run["copied"]
    entry.trials = before + new
    entry.seconds += elapsed
    entry.best_s = min([*times, *([entry.best_s] if entry.best_s else [])], default=None)
    entry.kept = None  # the new records are all there until the next prune
    entry.runs.append(run["id"])
    entry.target = str(facts.target())
    ledger = read_ledger(pdir)
    ledger[key] = entry
    _write_ledger(pdir, ledger)
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
    emit: Callable[[str], None] = print,
) -> list[TuneOutcome]:
    """Tune several (label, shape) workloads in turn, with progress lines through ``emit``."""
    _check_trials(trials)
    facts = facts or host_facts()
    shapes = list(shapes)
    ledger = read_ledger(profile_dir(facts, root))
    left = sum(max(trials - (ledger[k].trials if (k := workload_key(s, dtype, layout)) in ledger else 0), 0)
               for _, s in shapes)
    progress = Progress(len(shapes), left, emit=emit)
    out = []
    for i, (label, shape) in enumerate(shapes, 1):
        progress.index = i
        out.append(tune_workload(shape, trials=trials, dtype=dtype, layout=layout, facts=facts, root=root,
                                 search=search, label=label, progress=progress))
    return out


# --------------------------------------------------------------------------- pruning
def prune(pdir: str | Path, keep: int = KEEP_DEFAULT) -> dict[str, tuple[int, int]]:
    """Keep the ``keep`` fastest records of each workload; returns key -> (before, after).

    Each workload's record file is rewritten atomically. The ledger keeps the
    trial count that was measured.
    """
    _check_trials(keep, "keep")
    pdir = Path(pdir)
    ledger = read_ledger(pdir)
    if not ledger:
        raise DatabaseError(f"{pdir} holds no tuned workloads (no {LEDGER_FILE}); nothing to prune")
    result = {}
    for key, entry in ledger.items():
        shard = pdir / key
        check_database_files(shard)
        timed = _timed_records(shard / RECORD_FILE)
        fastest = sorted(range(len(timed)), key=lambda i: timed[i][1])[:keep]
        kept = sorted(i for i in fastest if timed[i][1] < FAILED_RUN_S)  # file order kept
        _atomic_write(shard / RECORD_FILE, "".join(timed[i][0] + "\n" for i in kept))
        entry.kept = len(kept)
        result[key] = (len(timed), len(kept))
    _write_ledger(pdir, ledger)
    return result


# --------------------------------------------------------------------------- lookups
def _target_key(target: tvm.target.Target) -> tuple[str, str, int]:
    attrs = target.attrs
    return (str(target.kind.name), str(attrs.get("mcpu", "")), int(attrs.get("num-cores", 0)))


def _shard(shape: MatmulShape, dtype: str, layout: str, facts: HostFacts | None,
           root: str | Path | None) -> Path:
    """The database folder of one workload in its profile."""
    return profile_dir(facts, root) / workload_key(shape, dtype, layout)


def records(
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    root: str | Path | None = None,
) -> list[ms.database.TuningRecord]:
    """Every successful record of one workload in its profile's database, fastest first.

    Raises
    ------
    NoRecordError
        The profile has no database for this workload (the message gives the
        command that tunes it).
    DatabaseError
        A file is corrupt, or a record was tuned for another target.
    """
    facts = facts or host_facts()
    shard = _shard(shape, dtype, layout, facts, root)
    if not (shard / RECORD_FILE).is_file():
        raise NoRecordError(
            f"no MetaSchedule record for {shape} {layout} {dtype} in {shard.parent}; "
            f"tune it with `{tune_command(shape, dtype, layout)}`"
        )
    db = open_database(shard)
    mod = matmul_module(shape, dtype, layout)
    if not db.has_workload(mod):
        raise DatabaseError(f"{shard} does not hold the workload {shape} {layout} {dtype}; it was filed under the "
                            "wrong name: move it away and tune again")
    want = _target_key(facts.target())
    out = []
    for rec in db.get_top_k(db.commit_workload(mod), 1 << 30):
        if _target_key(rec.target) != want:
            raise DatabaseError(
                f"{shard} holds a record tuned for {rec.target} but this profile is {facts.target()}; "
                "records from one CPU must never serve another: move the folder to its own profile"
            )
        if rec.run_secs and min(float(x) for x in rec.run_secs) < FAILED_RUN_S:
            out.append(rec)
    if not out:
        raise NoRecordError(f"{shard} holds no successful record; tune it with "
                            f"`{tune_command(shape, dtype, layout)} --trials 64`")
    return out


def apply_record(sch: Schedule, record: ms.database.TuningRecord) -> None:
    """Replay a record's trace on a fresh schedule of its workload."""
    record.trace.apply_to_schedule(sch, remove_postproc=False)


def best_record(
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    root: str | Path | None = None,
) -> tuple[ms.database.TuningRecord, Schedule]:
    """The fastest record of a workload and its replay on the canonical kernel (see :func:`records`)."""
    rec = records(shape, dtype=dtype, layout=layout, facts=facts, root=root)[0]
    sch = Schedule(matmul_module(shape, dtype, layout))
    apply_record(sch, rec)
    return rec, sch


def best_schedule(
    shape: MatmulShape,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    facts: HostFacts | None = None,
    root: str | Path | None = None,
) -> Schedule:
    """The fastest record of a workload, replayed on the canonical kernel (see :func:`records`)."""
    return best_record(shape, dtype=dtype, layout=layout, facts=facts, root=root)[1]


def has_record(shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN",
               facts: HostFacts | None = None, root: str | Path | None = None) -> bool:
    """Cheap check (files only) that a workload has a database in its profile."""
    return (_shard(shape, dtype, layout, facts, root) / RECORD_FILE).is_file()


__all__ = [
    "BUILD_TIMEOUT_S", "DatabaseError", "KEEP_DEFAULT", "LedgerEntry", "NoRecordError", "RPCSettings", "SearchSettings",
    "TuneOutcome", "apply_record", "best_record", "best_schedule", "build_candidate", "check_database_files", "default_root",
    "has_record", "open_database", "profile_dir", "prune", "read_ledger", "records", "tune", "tune_command",
    "tune_workload", "tune_workloads", "workload_key",
]
