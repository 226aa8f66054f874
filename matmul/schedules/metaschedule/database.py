"""MetaSchedule tuning into one database folder per CPU profile, and lookups from it.

MetaSchedule's database lookup matches on the workload's structure only, not
on the target, so a record tuned on one CPU would be served to any other. The
records therefore live under ``<root>/<profile>/`` (see
:attr:`~matmul.core.hardware.HostFacts.profile`), one MetaSchedule JSON database
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

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tvm import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ...core.hardware import HostFacts, host_facts
from ...core.kernel import matmul_module
from ...core.registry import Unavailable
from ...core.store import atomic_write, profile_dir, target_key, workload_key
from ...core.workloads import MatmulShape, positive_int
from .checks import RECORD_FILE, WORKLOAD_FILE, DatabaseError, check_database_files, check_jsonl

log = logging.getLogger(__name__)

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



class NoRecordError(Unavailable):
    """The profile's database holds no usable record for a workload."""


# --------------------------------------------------------------------------- where things live
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


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """Open an existing database folder, after :func:`check_database_files`. What the Python checks cannot see
    (an instruction TVM does not know, a decision of the wrong type) TVM refuses as it reads the records: a
    DatabaseError naming the folder, never TVM's own error."""
    workload, record = check_database_files(work_dir)
    try:
        return ms.database.JSONDatabase(
            path_workload=str(workload), path_tuning_record=str(record), allow_missing=False
        )
    except (RuntimeError, ValueError, TypeError) as err:
        why = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DatabaseError(f"tuning database {work_dir}: TVM cannot read a record of {record.name} ({why[:200]}); "
                            "it was left untouched: repair or move it away, then tune again") from None


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
        ledger = {key: LedgerEntry(**entry) for key, entry in raw["workloads"].items()}
        for key, entry in ledger.items():
            problem = _entry_problem(entry)
            if problem:
                raise TypeError(f"workload {key}: {problem}")
        return ledger
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DatabaseError(
            f"tuning ledger {path} is corrupt ({type(err).__name__}: {err}); "
            "it was left untouched: repair or move it away, then tune again"
        ) from None
    except OSError as err:
        raise DatabaseError(f"tuning ledger {path} cannot be read ({err.strerror})") from None


def _entry_problem(e: LedgerEntry) -> str | None:
    """Why a ledger entry's fields have the wrong types, or None."""
    def count(x, least: int) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= least

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0

    checks = {
        "M": count(e.M, 1), "K": count(e.K, 1), "N": count(e.N, 1), "trials": count(e.trials, 0),
        "seconds": number(e.seconds),
        "best_s": e.best_s is None or (number(e.best_s) and 0 < e.best_s < float("inf")),  # GFLOP/s divide by it
        "kept": e.kept is None or count(e.kept, 0), "layout": isinstance(e.layout, str),
        "dtype": isinstance(e.dtype, str), "target": isinstance(e.target, str),
        "runs": isinstance(e.runs, list) and all(isinstance(r, str) for r in e.runs),
    }
    bad = [f"{k}={getattr(e, k)!r}" for k, ok in checks.items() if not ok]
    return f"wrong type or value of {', '.join(bad)}" if bad else None


def write_ledger(pdir: Path, ledger: dict[str, LedgerEntry]) -> None:
    doc = {"profile": pdir.name, "workloads": {k: asdict(v) for k, v in sorted(ledger.items())}}
    atomic_write(pdir / LEDGER_FILE, json.dumps(doc, indent=1) + "\n")


def timed_records(path: Path) -> list[tuple[str, float]]:
    """Each record line of a record file with its mean run time (failed ones at ``FAILED_RUN_S`` or more).

    The file is checked first (:func:`check_jsonl`); DatabaseError names a bad line.
    """
    if not path.is_file():
        return []
    check_jsonl(path)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            run_secs = json.loads(line)[1][1]
            out.append((line, sum(float(x) for x in run_secs) / len(run_secs) if run_secs else float("inf")))
    return out


# --------------------------------------------------------------------------- pruning
def prune(pdir: str | Path, keep: int = KEEP_DEFAULT) -> dict[str, tuple[int, int]]:
    """Keep the ``keep`` fastest records of each workload; returns key -> (before, after).

    Each workload's record file is rewritten atomically. The ledger keeps the
    trial count that was measured.
    """
    positive_int(keep, "keep")
    pdir = Path(pdir)
    ledger = read_ledger(pdir)
    if not ledger:
        raise DatabaseError(f"{pdir} holds no tuned workloads (no {LEDGER_FILE}); nothing to prune")
    result = {}
    for key, entry in ledger.items():
        shard = pdir / key
        check_database_files(shard)
        timed = timed_records(shard / RECORD_FILE)
        fastest = sorted(range(len(timed)), key=lambda i: timed[i][1])[:keep]
        kept = sorted(i for i in fastest if timed[i][1] < FAILED_RUN_S)  # file order kept
        atomic_write(shard / RECORD_FILE, "".join(timed[i][0] + "\n" for i in kept))
        entry.kept = len(kept)
        result[key] = (len(timed), len(kept))
    write_ledger(pdir, ledger)
    return result


# --------------------------------------------------------------------------- lookups
def _shard(shape: MatmulShape, dtype: str, layout: str, facts: HostFacts | None,
           root: str | Path | None) -> Path:
    """The database folder of one workload in its profile."""
    return profile_dir(facts, root) / workload_key(shape, dtype, layout)


def module_records(shard: Path, mod: IRModule, what: str) -> list[ms.database.TuningRecord]:
    """Every successful record of the workload ``mod`` (``what`` in errors) in one database folder, fastest
    first, whatever CPU tuned it. NoRecordError: no database or no successful record; DatabaseError: a
    corrupt file, or the folder holds another workload."""
    if not (shard / RECORD_FILE).is_file():
        raise NoRecordError(f"no MetaSchedule record for {what} in {shard.parent}")
    db = open_database(shard)
    if not db.has_workload(mod):
        raise DatabaseError(f"{shard} does not hold the workload {what}; it was filed under the wrong name: move "
                            "it away and tune again")
    out = [rec for rec in db.get_top_k(db.commit_workload(mod), 1 << 30)
           if rec.run_secs and min(float(x) for x in rec.run_secs) < FAILED_RUN_S]
    if not out:
        raise NoRecordError(f"{shard} holds no successful record")
    return out


def shard_records(shard: Path, shape: MatmulShape, *, dtype: str = "float32",
                  layout: str = "NN") -> list[ms.database.TuningRecord]:
    """Every successful record of one canonical kernel in its database folder (see :func:`module_records`)."""
    return module_records(shard, matmul_module(shape, dtype, layout), f"{shape} {layout} {dtype}")


def check_record_targets(shard: Path, recs: list[ms.database.TuningRecord], facts: HostFacts) -> None:
    """A DatabaseError unless every record was tuned for the running profile's target."""
    want = target_key(facts.target())
    for rec in recs:
        if target_key(rec.target) != want:
            raise DatabaseError(f"{shard} holds a record tuned for {rec.target} but this profile is "
                                f"{facts.target()}; records from one CPU must never serve another: move the "
                                "folder to its own profile")


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
        The profile has no database for this workload, or no successful
        record in it (the message gives the command that tunes it).
    DatabaseError
        A file is corrupt, or a record was tuned for another target.
    """
    facts = facts or host_facts()
    shard = _shard(shape, dtype, layout, facts, root)
    try:
        out = shard_records(shard, shape, dtype=dtype, layout=layout)
    except NoRecordError as err:
        raise NoRecordError(f"{err}; tune it with `{tune_command(shape, dtype, layout)}`") from None
    check_record_targets(shard, out, facts)
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
    "DAMAGED", "FAILED_RUN_S", "KEEP_DEFAULT", "LEDGER_FILE", "POPULATION", "RECORD_FILE", "STAGING", "TRIALS_PER_ITER",
    "WORKLOAD_FILE", "DatabaseError", "LedgerEntry", "NoRecordError", "apply_record", "best_record", "best_schedule",
    "check_database_files", "check_jsonl", "check_record_targets", "has_record", "module_records", "open_database",
    "prune", "read_ledger", "records", "shard_records", "timed_records", "tune_command", "write_ledger"
]
