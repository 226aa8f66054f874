"""A group timed in several worker processes (``bench/ --processes N``, :class:`~matmul.measure.grid.Workers`).

Some kernels run at a speed that belongs to their process (MetaSchedule's on Zen 4: copies in one process agree,
processes disagree by up to 1.3x), so one process is one draw. Pooling the processes' samples must keep every
figure's meaning: round i of each case still pairs with round i of the others, the best time is the fastest
process's, and each case says how far its processes lay apart.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys

import pytest

from matmul import MatmulShape
from matmul.core.registry import Unavailable
from matmul.core.verify import VerificationError
from matmul.measure.grid import AA_SUFFIX, Measured, assemble, time_group
from matmul.measure.interleave import RoundSettings
from matmul.measure.peak import PROBE
from matmul.measure.stats import best_time
from matmul.measure.workers import Workers

#: Timed groups whose printed summaries and spreads depend on a quiet machine: each runs alone under -n.
pytestmark = pytest.mark.perf

SHAPE = MatmulShape(8, 32, 32)
TINY = RoundSettings(min_rounds=4, budget_s=1.0)


def _part(level: dict[str, float], rounds: int = 8, drift: float = 0.0, **kw) -> Measured:
    """One process's samples: each name at its level, every round slowed alike by ``drift`` (the machine)."""
    names = list(level)
    samples = [[level[n] * (1 + drift * r) for r in range(rounds)] for n in names]
    return Measured(names, samples, [3] * len(names), {n: {"kind": "tvm"} for n in names}, {}, "rule_based",
                    "rule_based", 1e6, 0.5, **kw)


def _levels(mlp: float) -> dict[str, float]:
    return {"rule_based": 1e-3, "rule_based" + AA_SUFFIX: 1e-3, "metaschedule": mlp, PROBE: 1e-4, "numpy": 2e-3}


def test_one_process_gives_the_figures_of_its_own_rounds():
    g = assemble(SHAPE, "NN", [_part(_levels(1.2e-3), drift=0.01)], TINY)
    assert g.processes == 1 and g.anchor == "rule_based" and g.aa_of == "rule_based"
    assert set(g.cases) == {"rule_based", "metaschedule", "numpy"}  # the copy and the probe taken apart
    ms = g.cases["metaschedule"]
    assert ms.to_anchor.value == pytest.approx(1.2) and ms.vs_numpy.value == pytest.approx(2 / 1.2)
    assert ms.by_process is None and ms.process_spread is None and g.aa.value == pytest.approx(1.0)
    assert g.peak is not None and g.rounds == 8 and g.converged
    assert g.brief("x")["process_spread"] is None and g.summary()["processes"] == 1


def test_processes_pool_their_rounds_and_the_best_time_is_the_fastest_process():
    """MetaSchedule at 1.25x rule_based in one process and 1.0x in the other, the machine 10% slower in the
    second: the pooled best is the fast process's, the spread says 1.25x, rule_based's own spread is absent
    (it is the anchor) and the A/A pair, built in each process, stays at 1."""
    slow, fast = _part(_levels(1.25e-3)), _part(_levels(1.0e-3))
    fast.samples = [[t * 1.1 for t in s] for s in fast.samples]  # the second process's machine: 10% slower
    g = assemble(SHAPE, "NN", [slow, fast], TINY)
    ms = g.cases["metaschedule"]
    assert g.processes == 2 and len(ms.samples) == 16 and g.rounds == 16
    assert ms.by_process == pytest.approx([1.25e-3, 1.1e-3])
    assert ms.best_s == pytest.approx(1.1e-3) == best_time(ms.samples)
    assert ms.process_spread == pytest.approx(1.25) and g.cases["rule_based"].process_spread is None
    assert g.cases["numpy"].process_spread == pytest.approx(1.0)  # 2x rule_based in both
    assert g.aa.value == pytest.approx(1.0) and g.brief("x")["process_spread_case"] == "metaschedule"
    assert g.aa_process_spread == pytest.approx(1.0)  # the control: the same code in both processes
    assert g.seconds == pytest.approx(1.0) and g.summary()["processes"] == 2
    assert ms.to_anchor.lo <= ms.to_anchor.value <= ms.to_anchor.hi and ms.to_anchor.hi <= 1.25


def test_a_case_that_failed_in_any_process_is_not_timed_and_keeps_its_error():
    bad = _part(_levels(1e-3))
    ok = _part(_levels(1e-3))
    i = bad.names.index("metaschedule")
    del bad.names[i], bad.samples[i], bad.calls[i]
    bad.errors["metaschedule"] = VerificationError("wrong result")
    g = assemble(SHAPE, "NN", [ok, bad], TINY)
    assert "metaschedule" not in g.cases and isinstance(g.errors["metaschedule"], VerificationError)
    with pytest.raises(VerificationError):
        g.case("metaschedule")


def test_numpy_alone_brackets_every_process_rounds():
    # the first worker times NumPy alone before its rounds, the last after its own (Workers.measure)
    parts = [_part(_levels(1e-3), alone=[1.0]), _part(_levels(1e-3)), _part(_levels(1e-3), alone=[4.0])]
    g = assemble(SHAPE, "NN", parts)
    assert g.cases["numpy"].agreement_check == "numpy_alone"
    assert g.cases["numpy"].agreement_median_s == pytest.approx(2.0)
    lone = assemble(SHAPE, "NN", [_part(_levels(1e-3), alone=[1.0]), _part(_levels(1e-3))])
    assert lone.cases["numpy"].agreement_check is None  # one side of the bracket is no check


def test_the_anchor_failing_in_one_process_falls_back_and_drops_the_aa_pair():
    ok, bad = _part(_levels(1.2e-3)), _part(_levels(1.2e-3))
    for n in ("rule_based", "rule_based" + AA_SUFFIX):
        i = bad.names.index(n)
        del bad.names[i], bad.samples[i], bad.calls[i]
    bad.errors["rule_based"] = VerificationError("wrong result")
    g = assemble(SHAPE, "NN", [ok, bad], TINY)
    assert g.anchor == "metaschedule" and g.aa_of is None and g.aa is None
    assert set(g.cases) == {"metaschedule", "numpy"} and g.cases["metaschedule"].to_anchor is None
    assert g.cases["numpy"].to_anchor.value == pytest.approx(2 / 1.2)


def test_a_stream_of_rounds_starts_its_rotation_where_it_is_told():
    from matmul.measure.candidates import Candidate
    from matmul.measure.interleave import time_rounds

    seen: list[str] = []
    t = [0.0]

    def kernel(name: str) -> Candidate:
        def call():
            t[0] += 1e-3

        cand = Candidate(name, "tvm", SHAPE, "NN", call, 1)
        cand._pool = lambda: (seen.append(name), contextlib.nullcontext())[1]
        return cand

    for first_pair, starts in ((0, "a"), (1, "b"), (2, "c"), (3, "a")):
        cands = [kernel("a"), kernel("b"), kernel("c")]
        settings = RoundSettings(min_rounds=4, max_rounds=4, sample_s=1e-3)
        seen.clear()
        time_rounds(cands, settings=settings, clock=lambda: t[0], settle=lambda: None, first_pair=first_pair)
        rounds = seen[-12:]  # 4 rounds of 3 blocks, after the calibration
        assert rounds[0] == starts and rounds[3:6] == rounds[:3][::-1], (first_pair, rounds)


def test_a_worker_share_keeps_whole_mirrored_pairs_and_splits_the_budget():
    w = Workers(3)
    share = w.share(RoundSettings(min_rounds=20, max_rounds=400, budget_s=21.0, ci_width=0.02))
    assert share.min_rounds == 8 and share.budget_s == pytest.approx(7.0) and share.ci_width == 0.02
    assert share.max_rounds == 132 and share.max_rounds % 2 == 0
    assert Workers(8).share(RoundSettings(min_rounds=4)).min_rounds == 4  # never below two mirrored pairs
    for bad in (1, 0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="processes >= 2"):
            Workers(bad)


def test_workers_time_a_real_group_and_send_its_errors_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))  # the workers inherit it: no MetaSchedule record
    with Workers(2) as workers:
        g = time_group(["metaschedule", "full", "numpy"], SHAPE, settings=TINY, workers=workers)
        again = time_group(["full"], SHAPE, settings=TINY, workers=workers, probe=False)  # the same workers
    err = g.errors["metaschedule"]
    assert isinstance(err, Unavailable) and "no MetaSchedule record" in str(err)  # the same class, after the trip
    full = g.cases["full"]
    assert g.processes == 2 and len(full.by_process) == 2 and len(full.samples) == g.rounds >= 8
    assert full.described["kind"] == "tvm" and "decisions" in full.described  # read by the first worker
    assert full.agreement_check == "time_evaluator" and g.cases["numpy"].agreement_check == "numpy_alone"
    assert g.cases["numpy"].agreement_median_s > 0
    base = g.cases["full"].by_process  # the anchor: full is the A/A original here
    numpy = [b / a for b, a in zip(g.cases["numpy"].by_process, base)]
    assert g.cases["numpy"].process_spread == pytest.approx(max(numpy) / min(numpy))
    assert g.aa is not None and g.aa_process_spread >= 1 and g.brief("x")["aa_process_spread"] == g.aa_process_spread
    assert g.peak is not None and again.peak is None and again.processes == 2


def test_a_worker_found_dead_between_groups_is_replaced():
    with Workers(2) as workers:
        time_group(["full"], SHAPE, settings=TINY, workers=workers, probe=False, aa=None)
        dead = workers._procs[1]
        dead.kill()
        dead.wait()
        g = time_group(["full"], SHAPE, settings=TINY, workers=workers, probe=False, aa=None)
        assert g.processes == 2 and len(g.cases["full"].by_process) == 2 and workers._procs[1] is not dead


@pytest.mark.parametrize("script, how", [
    ("import sys; sys.stdin.buffer.read(1); sys.exit(3)", "exit code 3"),
    ("import sys, time; sys.stdin.buffer.read(1); sys.stdout.buffer.write(b'\\xff'); sys.stdout.flush(); "
     "time.sleep(60)", "still running, killed"),
])
def test_a_worker_that_dies_or_answers_garbage_is_named_and_ended(monkeypatch, script, how):
    def fake_spawn():
        return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    monkeypatch.setattr(Workers, "_spawn", staticmethod(fake_spawn))
    with Workers(2) as workers:
        died = rf"timing worker 1 of 2 .* died or sent an unreadable reply \({how}\)"
        with pytest.raises(RuntimeError, match=died):
            time_group(["full"], SHAPE, settings=TINY, workers=workers)
        assert workers._procs[0].poll() is not None  # ended, not left running out of step


def test_an_error_that_cannot_travel_is_sent_as_its_name_and_message():
    from matmul.measure.workers import _sendable

    class Local(Exception):  # a class pickle cannot find by name
        pass

    err = _sendable(Local("no record"))
    assert type(err) is RuntimeError and str(err) == "Local: no record"
    keep = Unavailable("no record for qkv")
    assert _sendable(keep) is keep and pickle.loads(pickle.dumps(keep)).args == keep.args
