"""A resumed tuning run measures nothing its database holds, and its ETA counts staged trials.

The wrapper's bookkeeping is checked against a scripted inner search (so
every branch is reached on purpose); the hash it keys on is checked against
MetaSchedule's own candidate path (trace without post-processing, then the
CPU post-processors) on real records.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from matmul import MatmulShape, host_facts
from matmul.core.kernel import matmul_module
from matmul.core.store import profile_dir, workload_key
from matmul.schedules.metaschedule.database import (
    LEDGER_FILE,
    RECORD_FILE,
    STAGING,
    WORKLOAD_FILE,
    read_ledger,
)
from matmul.schedules.metaschedule.resume import (
    MAX_STALE_ROUNDS,
    SkipMeasured,
    measured_hashes,
    module_hash,
    trials_done,
)

from .conftest import TUNED_SHAPE

SHAPE = TUNED_SHAPE  # tuned once per session by the shared tuned_root fixture


def _mods(n: int) -> list:
    """n structurally different modules (different M), standing in for scheduled candidates."""
    return [matmul_module(MatmulShape(8 + i, 16, 16), "float32", "NN") for i in range(n)]


class ScriptedSearch:
    """An inner search that proposes fixed batches and records what it is told."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.notified: list[tuple[int, list]] = []
        self.budget = None

    def pre_tuning(self, max_trials, *_):
        self.budget = max_trials

    def generate_measure_candidates(self):
        if not self.batches:
            return None
        return [ms.search_strategy.MeasureCandidate(Schedule(m), []) for m in self.batches.pop(0)]

    def notify_runner_results(self, cands, results):
        self.notified.append((len(cands), [r.error_msg for r in results]))


def test_known_candidates_are_dropped_and_reported_to_the_inner_search():
    a, b, c, d = _mods(4)
    inner = ScriptedSearch([[a, b, c], [d]])
    wrap = SkipMeasured(inner, {module_hash(a), module_hash(c)})
    wrap.pre_tuning(10, 3, [])
    assert inner.budget == 12  # room for the two known modules
    first = wrap.generate_measure_candidates()
    assert [module_hash(x.sch.mod) for x in first] == [module_hash(b)]
    assert [n for n, _ in inner.notified] == [2] and "in an earlier run" in inner.notified[0][1][0]
    assert wrap.skipped == 2
    assert [module_hash(x.sch.mod) for x in wrap.generate_measure_candidates()] == [module_hash(d)]
    assert wrap.generate_measure_candidates() is None  # the inner search ended


def test_a_batch_of_only_known_candidates_asks_again_and_gives_up_after_stale_rounds():
    a, b = _mods(2)
    wrap = SkipMeasured(ScriptedSearch([[a], [a], [b]]), {module_hash(a)})
    wrap.pre_tuning(4, 1, [])
    (got,) = wrap.generate_measure_candidates()
    assert module_hash(got.sch.mod) == module_hash(b)
    stale = ScriptedSearch([[a]] * (MAX_STALE_ROUNDS + 1))
    wrap = SkipMeasured(stale, {module_hash(a)})
    wrap.pre_tuning(10, 1, [])
    assert wrap.generate_measure_candidates() is None
    assert len(stale.notified) == MAX_STALE_ROUNDS


def test_an_empty_batch_is_passed_on_not_taken_for_the_end():
    wrap = SkipMeasured(ScriptedSearch([[]]), set())
    wrap.pre_tuning(4, 4, [])
    assert wrap.generate_measure_candidates() == []


def test_the_wrapper_keeps_the_trial_budget_the_inner_search_was_given_room_beyond():
    a, b, c, d, e = _mods(5)
    inner = ScriptedSearch([[a, b, c], [d, e]])
    wrap = SkipMeasured(inner, {module_hash(a)})
    wrap.pre_tuning(3, 3, [])
    assert len(wrap.generate_measure_candidates()) == 2  # b, c
    (last,) = wrap.generate_measure_candidates()  # d; e would be a fourth trial
    assert module_hash(last.sch.mod) == module_hash(d)
    assert inner.notified[-1][0] == 1  # e handed back unmeasured
    assert wrap.generate_measure_candidates() is None



@pytest.mark.metaschedule
def test_record_hashes_match_the_candidates_metaschedule_would_send(tuned_root):
    shard = profile_dir(host_facts(), tuned_root) / workload_key(SHAPE)
    known = measured_hashes(shard)
    db = ms.database.JSONDatabase(work_dir=str(shard))
    recs = db.get_all_tuning_records()
    assert len(known) == len(recs) == 6
    for rec in recs:  # the evolutionary search's path: the trace without post-processing, then the post-processors
        sch = Schedule(rec.workload.mod)
        rec.trace.apply_to_schedule(sch, remove_postproc=True)
        sch.enter_postproc()
        for pp in ms.postproc.Postproc.create("llvm"):
            assert pp.apply(sch)
        assert module_hash(sch.mod) in known
    assert module_hash(matmul_module(SHAPE, "float32", "NN")) not in known  # the untouched kernel is no record


def test_an_empty_folder_has_no_measured_modules(tmp_path):
    assert measured_hashes(tmp_path) == set()


@pytest.mark.metaschedule
def test_trials_left_count_what_a_killed_run_staged(tuned_root, tmp_path):
    pdir = profile_dir(host_facts(), tmp_path)
    key = workload_key(SHAPE)
    staging = pdir / STAGING / key
    staging.mkdir(parents=True)
    shard = profile_dir(host_facts(), tuned_root) / key
    shutil.copyfile(shard / WORKLOAD_FILE, staging / WORKLOAD_FILE)
    (staging / RECORD_FILE).write_text("".join((shard / RECORD_FILE).read_text().splitlines(True)[:5]))
    (staging / "run.json").write_text(json.dumps({"id": "r1", "copied": 2, "seconds": 1.0}))
    assert trials_done(pdir, key, read_ledger(pdir)) == 3  # 5 staged lines, 2 of them copied from the shard
    (staging / "run.json").write_text("{not json")
    assert trials_done(pdir, key, read_ledger(pdir)) == 0  # the tune itself reports a corrupt run file
    assert not (pdir / LEDGER_FILE).exists()
