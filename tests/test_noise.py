"""The interleaved timer and its statistics, driven by a synthetic clock.

Each fake kernel advances a fake clock by its true time, scaled by a machine
state that drifts linearly (and, where asked, by seeded noise). So these
tests know the truth: interleaving must cancel the drift, a 10% slowdown must
be flagged, an A/A pair must not be, and the adaptive sampler must stop once
its intervals are tight, or say the group is inconclusive.
"""

from __future__ import annotations

import contextlib
import statistics

import numpy as np
import pytest

from matmul import MatmulShape
from matmul.measure.candidates import Candidate
from matmul.measure.interleave import RoundSettings, time_interleaved, time_rounds
from matmul.measure.stats import (
    Ratio,
    best_time,
    is_change,
    mann_whitney_p,
    noise_floor,
    ratio_of,
    ratio_of_medians,
    ratio_of_relative_bests,
)

SHAPE = MatmulShape(16, 64, 64)


class Machine:
    """A clock whose kernels slow down linearly with time (``drift`` per second), plus seeded noise."""

    def __init__(self, drift: float = 0.0, noise: float = 0.0, seed: int = 0):
        self.t = 0.0
        self.drift = drift
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def clock(self) -> float:
        return self.t

    def kernel(self, name: str, seconds: float, kind: str = "tvm") -> Candidate:
        def call():
            scale = 1.0 + self.drift * self.t
            jitter = float(self.rng.lognormal(0.0, self.noise)) if self.noise else 1.0
            self.t += seconds * scale * jitter

        return Candidate(name, kind, SHAPE, "NN", call, 1)


def _quiet() -> None:
    return None


def test_interleaving_cancels_linear_drift_that_back_to_back_timing_does_not():
    m = Machine(drift=0.5)  # 50% slower per second: a machine warming up
    a, a2 = m.kernel("a", 1e-3), m.kernel("a2", 1e-3)
    r = time_rounds([a, a2], anchor=0, settings=RoundSettings(min_rounds=20, max_rounds=20), clock=m.clock,
                    settle=_quiet)
    assert r.ratios[1].value == pytest.approx(1.0, abs=0.01)
    # the same kernels, all of a's samples first, then all of a2's
    seq_a = time_rounds([a], settings=RoundSettings(min_rounds=20, max_rounds=20), clock=m.clock, settle=_quiet)
    seq_b = time_rounds([a2], settings=RoundSettings(min_rounds=20, max_rounds=20), clock=m.clock, settle=_quiet)
    drifted = np.median(seq_b.samples[0]) / np.median(seq_a.samples[0])
    assert drifted > 1.05  # back to back, the second copy reads slower


def test_a_ten_percent_slowdown_is_flagged_and_an_aa_pair_is_not():
    m = Machine(drift=0.2, noise=0.05, seed=3)
    a, twin, slow = m.kernel("a", 1e-3), m.kernel("twin", 1e-3), m.kernel("slow", 1.1e-3)
    r = time_rounds([a, twin, slow], anchor=0, settings=RoundSettings(min_rounds=40, max_rounds=40),
                    clock=m.clock, settle=_quiet)
    aa, ab = r.ratios[1], r.ratios[2]
    floor = noise_floor(aa)
    assert not aa.significant and not is_change(aa, floor)
    assert ab.lo > 1.05 and ab.significant and is_change(ab, floor)
    assert ab.value == pytest.approx(1.1, abs=0.03)


def test_sampling_stops_once_every_interval_is_tight():
    m = Machine(noise=0.02, seed=1)
    r = time_rounds([m.kernel("a", 1e-3), m.kernel("b", 2e-3)], anchor=0,
                    settings=RoundSettings(min_rounds=6, ci_width=0.03, budget_s=60), clock=m.clock, settle=_quiet)
    assert r.converged and r.widest <= 0.03
    assert r.rounds < 40  # low noise: few rounds suffice
    assert r.ratios[1].value == pytest.approx(2.0, rel=0.03)


def test_a_group_that_stops_early_is_never_reported_inconclusive():
    # Noise that leaves the intervals near +-3% after a few rounds: the quick check (fewer resamples) passes
    # on some round pairs where the reported interval is still a little wider. Stopping there would end the
    # group with time and rounds to spare and call it inconclusive (13 of 60 seeds did, widest 3.00-3.32%).
    early = []
    for seed in range(24):
        m = Machine(noise=0.06, seed=seed)
        r = time_rounds([m.kernel("a", 1e-3), m.kernel("b", 1e-3), m.kernel("c", 1.2e-3)], anchor=0,
                        settings=RoundSettings(min_rounds=4, ci_width=0.03, budget_s=60), clock=m.clock,
                        settle=_quiet)
        assert r.seconds < 60 and r.rounds < r.settings.max_rounds  # stopped by its intervals, not its limits
        if not r.converged:
            early.append((seed, r.rounds, round(r.widest, 4)))
    assert early == []


def test_a_group_that_cannot_get_tight_within_its_budget_is_inconclusive():
    m = Machine(noise=0.6, seed=2)
    r = time_rounds([m.kernel("a", 1e-3), m.kernel("b", 1e-3)], anchor=0,
                    settings=RoundSettings(min_rounds=4, ci_width=0.01, budget_s=0.5), clock=m.clock, settle=_quiet)
    assert not r.converged and r.widest > 0.01
    assert r.seconds < 0.5 + 0.2  # the budget, plus at most the round pair that crossed it


def test_blocks_alternate_in_mirrored_order_and_settle_only_where_the_pool_changes():
    m = Machine()
    blocks: list[str] = []  # a candidate's pool is entered once per block (and once to calibrate it)
    settles: list[int] = []

    def kernel(name, kind):
        cand = m.kernel(name, 1e-3, kind)
        cand._pool = lambda: (blocks.append(name), contextlib.nullcontext())[1]
        return cand

    cands = [kernel("a", "tvm"), kernel("b", "tvm"), kernel("numpy", "reference")]
    r = time_rounds(cands, settings=RoundSettings(min_rounds=4, max_rounds=4), clock=m.clock,
                    settle=lambda: settles.append(len(blocks)))
    # the TVM kernels rotate between mirrored pairs; NumPy, the other pool, stays at the end
    assert blocks == ["a", "b", "numpy"] + ["a", "b", "numpy", "numpy", "b", "a", "b", "a", "numpy", "numpy", "a", "b"]
    assert r.rounds == 4 and all(len(s) == 4 for s in r.samples)
    # before each calibration (3); in the rounds only where TVM and NumPy meet: a | b numpy | numpy b | ...
    assert settles == [0, 1, 2, 3, 5, 7, 11, 13]


def test_fixed_form_gives_blocks_per_candidate():
    m = Machine()
    out = time_interleaved([m.kernel("a", 1e-3), m.kernel("b", 3e-3)], blocks=4, calls=3, warmup=1)
    assert [len(x) for x in out] == [4, 4]
    with pytest.raises(ValueError, match="even"):
        time_interleaved([m.kernel("a", 1e-3)], blocks=3)


@pytest.mark.parametrize("bad", [{"min_rounds": 3}, {"min_rounds": 8, "max_rounds": 6}, {"ci_width": 0},
                                 {"budget_s": -1}])
def test_round_settings_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        RoundSettings(**bad)


def test_anchor_must_be_one_of_the_candidates():
    m = Machine()
    with pytest.raises(ValueError, match="anchor 2"):
        time_rounds([m.kernel("a", 1e-3)], anchor=2, clock=m.clock, settle=_quiet)


def test_mann_whitney_matches_the_textbook_values():
    # Two samples with no overlap: U = 0, the smallest two-sided p for n1 = n2 = 5 under the normal approximation
    p = mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert p == pytest.approx(0.01219, abs=2e-4)
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert mann_whitney_p([2, 2, 2], [2, 2, 2]) == 1.0  # all tied


def test_ratio_interval_covers_the_truth_and_pairing_removes_shared_drift():
    rng = np.random.default_rng(0)
    drift = np.linspace(1.0, 2.0, 60)  # both streams share it round by round
    x = 1.2 * drift * rng.lognormal(0, 0.01, 60)
    y = drift * rng.lognormal(0, 0.01, 60)
    paired = ratio_of_medians(x, y, paired=True)
    unpaired = ratio_of_medians(x, y, paired=False)
    assert paired.lo < 1.2 < paired.hi
    assert paired.half_width < unpaired.half_width / 3


def test_the_best_time_is_the_mean_of_the_fastest_five_percent_and_at_least_three():
    assert best_time([5.0, 1.0, 4.0, 2.0, 3.0]) == pytest.approx(2.0)  # 5% of 5 rounds up to the least, 3
    many = list(range(100, 0, -1))  # 100 samples: the fastest 5
    assert best_time(many) == pytest.approx(3.0)
    assert best_time([2.0, 4.0]) == pytest.approx(3.0)  # fewer than 3: all of them
    with pytest.raises(ValueError, match="unknown estimator 'min'; choose one of: median, best"):
        ratio_of([1.0, 2.0], [1.0, 2.0], paired=False, estimator="min")


def _contended(scale: float, seed: int, share: float, n: int = 80) -> np.ndarray:
    """A kernel's samples on a shared host: small symmetric jitter, and in ``share`` of the rounds a neighbour's
    load that slows it 10-60% (noise only ever slows a kernel)."""
    rng = np.random.default_rng(seed)
    hit = rng.random(n) < share
    return 1e-4 * scale * rng.lognormal(0, 0.005, n) * np.where(hit, 1 + rng.uniform(0.1, 0.6, n), 1.0)


def test_best_times_hold_across_runs_that_met_different_loads_and_still_see_a_slowdown():
    quiet, busy = _contended(1.0, 1, share=0.2), _contended(1.0, 2, share=0.7)
    same_median = ratio_of(busy, quiet, paired=False)
    same_best = ratio_of(busy, quiet, paired=False, estimator="best")
    assert same_median.value > 1.1 and same_median.significant  # the median follows the neighbours' load
    # a run with fewer unloaded rounds reads its best a little slower (24 against 64 here: +0.4%), inside any
    # A/A floor: no change
    assert same_best.value == pytest.approx(1.0, abs=0.01) and not is_change(same_best, 0.01)
    slower = ratio_of(_contended(1.1, 3, share=0.7), quiet, paired=False, estimator="best")
    assert slower.value == pytest.approx(1.1, abs=0.01) and slower.lo > 1.05 and slower.significant


def test_best_times_are_tested_on_their_own_shift_not_on_the_load():
    # the base met a busy machine, the run a quiet one, and the run's code is 8% slower: by medians the run
    # reads faster; by best times 8% slower, significant by the bootstrap's p
    base, run = _contended(1.0, 5, share=0.7), _contended(1.08, 6, share=0.1)
    assert ratio_of(run, base, paired=False).value < 1.0
    best = ratio_of(run, base, paired=False, estimator="best")
    assert best.value == pytest.approx(1.08, abs=0.01) and best.p < 0.01 and best.significant
    same = ratio_of(_contended(1.0, 7, share=0.1), base, paired=False, estimator="best")
    assert same.lo <= 1.0 <= same.hi and same.p > 0.05 and not same.significant


def test_relative_best_times_cancel_what_the_reference_shares_round_by_round():
    rng = np.random.default_rng(3)
    drift = rng.uniform(1.0, 1.5, 80)  # each round's machine state, shared by the case and its reference
    ref0, ref1 = 2e-4 * drift * rng.lognormal(0, 0.003, 80), 2e-4 * 1.3 * drift * rng.lognormal(0, 0.003, 80)
    x0, x1 = 1e-4 * drift * rng.lognormal(0, 0.003, 80), 1.1e-4 * 1.3 * drift * rng.lognormal(0, 0.003, 80)
    r = ratio_of_relative_bests(x1, ref1, x0, ref0)  # the run 30% slower for both, the case 10% more
    assert r.value == pytest.approx(1.1, abs=0.01) and r.lo > 1.05 and r.significant
    assert ratio_of_relative_bests(x0, ref0, x0, ref0).value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one reference sample per round"):
        ratio_of_relative_bests(x1, ref1[:-1], x0, ref0)


@pytest.mark.parametrize("x, y, msg", [([1.0], [1.0, 2.0], "at least 2"), ([1.0, -1.0], [1.0, 2.0], "positive"),
                                       ([1.0, float("nan")], [1.0, 2.0], "finite")])
def test_ratio_refuses_bad_samples(x, y, msg):
    with pytest.raises(ValueError, match=msg):
        ratio_of_medians(x, y, paired=False)


def test_noise_floor_is_the_larger_of_offset_and_half_width():
    assert noise_floor(Ratio(1.02, 1.01, 1.03, 0.5, 10, 10)) == pytest.approx(0.02)
    assert noise_floor(Ratio(1.0, 0.95, 1.05, 0.5, 10, 10)) == pytest.approx(0.05)


def test_the_budget_caps_even_the_minimum_rounds_but_not_below_two_pairs():
    m = Machine()
    slow = [m.kernel("a", 0.3), m.kernel("b", 0.3)]  # 0.3 s per call: 20 rounds would take 12 s
    r = time_rounds(slow, anchor=0, settings=RoundSettings(min_rounds=20, budget_s=1.0), clock=m.clock,
                    settle=_quiet)
    assert r.rounds == 4 and r.seconds < 4
    fast = time_rounds([m.kernel("a", 1e-3), m.kernel("b", 1e-3)], anchor=0,
                       settings=RoundSettings(min_rounds=20, budget_s=60), clock=m.clock, settle=_quiet)
    assert fast.rounds == 20  # within budget the minimum holds


def test_a_kernel_that_fills_a_sample_alone_gets_no_warm_up_call_and_shadows_sample_forward_rounds():
    m = Machine()
    calls = {"slow": 0, "fast": 0}

    def counted(name, seconds):
        cand = m.kernel(name, seconds)
        inner = cand.call

        def call():
            calls[name] += 1
            inner()

        cand.call = call
        return cand

    cands = [counted("slow", 1.0), counted("fast", 0.125)]  # exact binary fractions: the call counts are exact
    shadowed = []
    r = time_rounds(cands, anchor=1, settings=RoundSettings(min_rounds=8, max_rounds=8, budget_s=600, sample_s=0.5),
                    clock=m.clock, settle=_quiet, shadows=lambda n, c: (lambda: shadowed.append(n) or 1e-4))
    assert r.calls == [1, 4]
    assert calls["slow"] == 2 + 8  # calibration (warm-up + 1: one call fills a sample), then one call per round
    assert calls["fast"] == 4 + 8 * 5  # calibration (warm-up + 3), then a warm-up call and 4 timed calls per round
    # forward rounds only, in each pair's rotated order
    assert shadowed == [0, 1, 1, 0, 0, 1, 1, 0] and len(r.shadow[0]) == 4


class SleepyMachine(Machine):
    """Waiting for quiet is a sleep, and the CPU comes back from it slowly: the first ``cold_s`` seconds
    of work after each wait run at half speed (measured on the 2-core VMs: 1.5-3x for 2-5 ms)."""

    def __init__(self, cold_s: float = 0.005):
        super().__init__()
        self.cold_s, self.cold_until = cold_s, -1.0

    def settle(self) -> None:
        self.t += 0.1
        self.cold_until = self.t + self.cold_s

    def kernel(self, name: str, seconds: float, kind: str = "tvm") -> Candidate:
        def call():
            self.t += seconds * (2.0 if self.t < self.cold_until else 1.0)

        return Candidate(name, kind, SHAPE, "NN", call, 1)


@pytest.mark.parametrize("warm_s", [0.0, 0.01])
def test_the_block_after_a_pool_switch_runs_warm_before_it_is_timed(monkeypatch, warm_s):
    # a, its copy and a vendor library: the first TVM block after the switch back from the vendor's pool
    # starts cold, and without a warm-up its sample pays for the slow start. The rotation between mirrored
    # pairs gives that place to a and to its copy equally often, so the A/A pair agrees either way.
    from matmul.measure import interleave

    monkeypatch.setattr(interleave, "WARM_S", warm_s)
    m = SleepyMachine()
    cands = [m.kernel("a", 1e-3), m.kernel("a_copy", 1e-3), m.kernel("vendor", 1e-3, kind="reference")]
    r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=20, max_rounds=20), clock=m.clock,
                    settle=m.settle)
    cold = [x for x in r.samples[0] + r.samples[1] if x > 1.2e-3]
    # without the warm-up: the very first block, then one per mirrored pair, shared between a and its copy
    assert len(cold) == (0 if warm_s else 1 + 10), cold
    assert abs(2 * len([x for x in r.samples[0] if x > 1.2e-3]) - len(cold)) <= 1
    assert r.ratios[1].value == pytest.approx(1.0, abs=0.01)


def test_rotation_removes_the_edge_advantage_of_the_first_candidate():
    """A machine where a kernel timed right after itself runs 2% faster (its tensors are still in cache):
    plain mirrored rounds (A B C, C B A, A B C) time A after itself where two pairs meet and B never, so an
    A/A pair of A and its copy B read apart; the rotation between pairs gives every kernel that place
    equally often."""
    m = Machine()
    blocks = {"previous": None, "current": None}

    def kernel(name):
        def pool():  # entered once per block
            blocks["previous"], blocks["current"] = blocks["current"], name
            return contextlib.nullcontext()

        def call():
            m.t += 1e-3 * (0.98 if blocks["previous"] == name else 1.0)

        cand = Candidate(name, "tvm", SHAPE, "NN", call, 1)
        cand._pool = pool
        return cand

    cands = [kernel("a"), kernel("a_copy"), kernel("b")]
    r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, max_rounds=12, min_calls=1,
                                                              sample_s=1e-3), clock=m.clock, settle=_quiet)
    means = [statistics.fmean(s) for s in r.samples]
    assert max(means) / min(means) == pytest.approx(1.0, abs=2e-3), means
