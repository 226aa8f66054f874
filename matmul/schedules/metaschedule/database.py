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

import base64
import binascii
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tvm import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ...core.hardware import HostFacts, host_facts
from ...core.kernel import matmul_module
from ...core.registry import Unavailable
from ...core.store import atomic_write, profile_dir, target_key, workload_key
from ...core.workloads import MatmulShape, positive_int

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


# --------------------------------------------------------------------------- checked file access
def _bad(path: Path, lineno: int, why: str) -> DatabaseError:
    return DatabaseError(f"tuning database file {path} line {lineno} {why}; it was left untouched: "
                         "repair or move it away, then tune again")


def _workload_problem(obj: Any) -> str | None:
    """Why a workload line is not one MetaSchedule can read, or None.

    A line is ``[structural hash (digits), base64 of an 8-byte length and the module's JSON]``.
    """
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], str)):
        return "is not a MetaSchedule workload ([hash, base64 module])"
    if not obj[0].isdigit():
        return f"has a structural hash {obj[0][:20]!r} that is not a number"
    try:
        raw = base64.b64decode(obj[1], validate=True)
    except (binascii.Error, ValueError):
        return "holds a module that is not valid base64"
    if len(raw) < 8 or int.from_bytes(raw[:8], "little") != len(raw) - 8:
        return "holds a module whose length header does not match its size (cut or edited)"
    try:
        graph = json.loads(raw[8:])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "holds a module that is not JSON"
    if not (isinstance(graph, dict) and "root_index" in graph and isinstance(graph.get("nodes"), list)):
        return "holds a module that is not a TVM JSON graph"
    return None


def _record_problem(obj: Any, workloads: int | None) -> str | None:
    """Why a record line is not one MetaSchedule can read, or None.

    A line is ``[workload index, [trace, run seconds or null, target, argument info]]`` and the trace is
    ``[instructions, decisions]``.
    """
    shape_ok = (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int) and not isinstance(obj[0], bool)
                and isinstance(obj[1], list) and len(obj[1]) == 4)
    if not shape_ok:
        return "is not a MetaSchedule tuning record ([workload index, [trace, run_secs, target, args_info]])"
    index, (trace, run_secs, target, args_info) = obj
    if index < 0 or (workloads is not None and index >= workloads):
        return f"names workload {index}, but the workload file holds {workloads} workload(s)"
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(x, list) for x in trace)):
        return "has a trace that is not [instructions, decisions]"
    if run_secs is not None and not (isinstance(run_secs, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in run_secs)):
        return "has run seconds that are not a list of numbers"
    if not (isinstance(target, dict) and isinstance(target.get("kind"), str)):
        return "has a target that is not a target object"
    if not isinstance(args_info, list):
        return "has argument info that is not a list"
    return None


def _json_lines(path: Path):
    """(line number, parsed object) of every non-empty line; DatabaseError naming the file otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise DatabaseError(f"tuning database file {path} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise _bad(path, line, "is not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DatabaseError(
                f"tuning database file {path} is corrupt at line {lineno} ({err.msg}); "
                "it was left untouched: repair or move it away, then tune again"
            ) from None


def check_jsonl(path: Path, workloads: int | None = None) -> int:
    """Number of entries in a database file, each checked in Python before TVM ever reads it.

    A workload file's lines must decode to modules; a record file's lines must
    have the record's structure and (given ``workloads``, or a workload file
    beside it) name a workload that exists. TVM aborts the process on a
    well-formed but wrong line, so nothing unchecked reaches it.

    Raises
    ------
    DatabaseError
        Naming the file, the line and what is wrong with it.
    """
    path = Path(path)
    is_record = path.name != WORKLOAD_FILE
    if is_record and workloads is None and (path.parent / WORKLOAD_FILE).is_file():
        workloads = sum(1 for _ in _json_lines(path.parent / WORKLOAD_FILE))
    count = 0
    for lineno, obj in _json_lines(path):
        problem = _record_problem(obj, workloads) if is_record else _workload_problem(obj)
        if problem:
            raise _bad(path, lineno, problem)
        count += 1
    return count


def check_database_files(work_dir: str | Path) -> tuple[Path, Path]:
    """Check that both database files exist and every line is a well-formed workload or record.

    Raises
    ------
    DatabaseError
        Naming the missing file, or the file and line that is wrong.
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
    check_jsonl(paths[1], check_jsonl(paths[0]))
    return paths


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """Open an existing database folder, after :func:`check_database_files`."""
    workload, record = check_database_files(work_dir)
    return ms.database.JSONDatabase(
        path_workload=str(workload), path_tuning_record=str(record), allow_missing=False
    )


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
