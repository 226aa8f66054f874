"""A resumed tuning run measures no schedule that its database already holds.

MetaSchedule's evolutionary search remembers only what it measured itself in
the current run (its ``measured_workloads_`` set starts empty; upstream marks
seeding it from the database as a TODO). A run that continues from kept
records therefore seeds its population with the database's best traces and
sends some of them to be measured again, and each repeat was counted as a new
trial. :class:`SkipMeasured` wraps the search: it hashes the module of every
record already in the database, drops candidates whose module is among them
before they are built, and tells the inner search they were handled, so its
trial budget stays in step.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

from ...core.store import atomic_write
from .database import RECORD_FILE, STAGING, DatabaseError, check_jsonl, open_database, timed_records

#: Rounds in a row where every candidate was measured before, after which the search gives up.
MAX_STALE_ROUNDS = 5

log = logging.getLogger(__name__)


def module_hash(mod: tvm.IRModule) -> int:
    """The structural hash MetaSchedule's default ("structural") module equality uses."""
    return int(tvm_ffi.structural_hash(mod))


def measured_hashes(work_dir: str | Path) -> set[int]:
    """Hashes of the scheduled module of every record (failed ones too) in a database folder."""
    work_dir = Path(work_dir)
    if not (work_dir / RECORD_FILE).is_file():
        return set()
    db = open_database(work_dir)  # checked: TVM never reads an unchecked line
    out = set()
    for rec in db.get_all_tuning_records():
        sch = Schedule(rec.workload.mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
        out.add(module_hash(sch.mod))
    return out


@derived_object
class SkipMeasured(PySearchStrategy):
    """Wrap a search strategy so it never sends a module in ``known`` to be measured.

    ``skipped`` counts the candidates dropped (the first time each is seen;
    the inner search never proposes the same module twice in one run).
    """

    def __init__(self, inner: ms.search_strategy.SearchStrategy, known: set[int]) -> None:
        self.inner = inner
        self.known = set(known)
        self.skipped = 0
        self.max_trials = 0
        self.sent = 0

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        # The inner search counts dropped candidates as trials; give it room for each known module. The
        # trial budget itself is kept here: the task scheduler leaves it to the strategy.
        self.max_trials, self.sent = max_trials, 0
        self.inner.pre_tuning(max_trials + len(self.known), num_trials_per_iter, design_spaces, database,
                              cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()
        log.info("resumed tuning: %d candidate(s) already in the database were not measured again", self.skipped)

    def generate_measure_candidates(self):
        for _ in range(MAX_STALE_ROUNDS):
            if self.sent >= self.max_trials:
                return None
            cands = self.inner.generate_measure_candidates()
            if cands is None:
                return None
            seen = [module_hash(c.sch.mod) in self.known for c in cands]  # one hash per candidate
            fresh = [c for c, k in zip(cands, seen, strict=True) if not k]
            old = [c for c, k in zip(cands, seen, strict=True) if k]
            self.skipped += len(old)
            over = fresh[self.max_trials - self.sent:]  # beyond the budget: never measured
            fresh = fresh[:self.max_trials - self.sent]
            if old or over:
                self.inner.notify_runner_results(
                    old + over, [ms.runner.RunnerResult(run_secs=None, error_msg="not measured: "
                                                        "in an earlier run, or over the trial budget")]
                    * (len(old) + len(over)))
            self.sent += len(fresh)
            if fresh or not cands:
                return fresh
        return None

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self) -> ms.search_strategy.SearchStrategy:
        return SkipMeasured(self.inner.clone(), self.known)


def salvage_staging_file(path: Path, keep_dir: Path) -> None:
    """Drop a last line that a kill cut short (no newline, not JSON); refuse any other damage.

    The damaged original is kept in ``keep_dir`` as ``<staging folder>-<name>.cut-<time>``.
    """
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        check_jsonl(path)
        return
    head, _, tail = data.rpartition(b"\n")
    try:
        json.loads(tail)
    except json.JSONDecodeError:
        keep_dir.mkdir(parents=True, exist_ok=True)
        keep = keep_dir / f"{path.parent.name}-{path.name}.cut-{time.strftime('%Y%m%dT%H%M%S')}"
        shutil.copyfile(path, keep)
        atomic_write(path, (head + b"\n").decode() if head else "")
        log.warning("%s ended in a line cut short by a kill; kept the complete lines, the original is %s",
                    path, keep)
    else:
        with path.open("ab") as fh:  # a whole record without its newline
            fh.write(b"\n")
    check_jsonl(path)


def staged_trials(staging: Path, run: dict) -> int:
    """Trials a staged run measured itself: its record lines beyond those it copied from the shard."""
    return max(len(timed_records(staging / RECORD_FILE)) - int(run["copied"]), 0)


def trials_done(pdir: Path, key: str, ledger: dict) -> int:
    """Trials of ``key`` measured so far: the ledger's, plus those a killed run left in staging."""
    entry = ledger.get(key)
    done = entry.trials if entry else 0
    staging = pdir / STAGING / key
    try:
        run = json.loads((staging / "run.json").read_text(encoding="utf-8"))
        if entry is not None and run["id"] in entry.runs:
            return done  # merged already; only the clean-up was left
        return done + staged_trials(staging, run)
    except (OSError, ValueError, KeyError, TypeError, DatabaseError):
        return done  # no staged run, or one the tune itself will report


__all__ = ["MAX_STALE_ROUNDS", "SkipMeasured", "measured_hashes", "module_hash", "salvage_staging_file",
           "staged_trials", "trials_done"]
