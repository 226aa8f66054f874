"""The one interleaved timer: every candidate of a group timed round by round, in mirrored order.

On a shared 2-core machine absolute times drift by 2x between runs, and the
noise is correlated over seconds, so candidates timed one after another land
in different machine states. Here the candidates of one group are timed in
rounds ordered A B C, C B A, A B C, ... (ABBA for two): drift that is roughly
linear over a pair of rounds hits every candidate alike, and sample ``i`` of
every candidate comes from the same few milliseconds of machine state, so the
ratio of two candidates can be bootstrapped by round
(:func:`~matmul.measure.stats.ratio_of_medians` with ``paired=True``).

One sample is a *block*: one untimed call (the block's own warm-up: the
previous candidate evicted this one's tensors), then ``calls`` timed calls
back to back; the sample is their median per-call time. The process waits
for quiet (:func:`~matmul.measure.timing.wait_for_quiet`) only where the
thread pool changes (TVM to NumPy, NumPy to PyTorch): the previous
library's workers still spin there, while TVM kernels share one pool. The
wait is a sleep, so the block after it first runs untimed for
:data:`WARM_S`, until the CPU is back to speed.

:func:`time_rounds` samples adaptively: after ``min_rounds`` it keeps adding
round pairs until each candidate's ratio to the anchor has a confidence
interval no wider than ``+-ci_width``, or the time ``budget_s`` is spent
(then the group is *inconclusive*). The budget caps even ``min_rounds``,
down to :data:`MIN_ROUNDS`, so a group of slow kernels stays within it. :func:`time_interleaved` is the fixed
form the paired, evidence, sweep, compare-db and held-out commands use.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .candidates import Candidate
from .stats import BOOTSTRAP, Ratio, ratio_of_medians
from .timing import call_times, median_seconds, wait_for_quiet

#: Each fixed-form block lasts at least this long (see :func:`calls_for`): a
#: 0.2 ms kernel timed 10 times read up to 15% apart from itself in ABBA blocks.
BLOCK_S = 0.03
#: Each adaptive-form sample lasts at least this long: rounds are many, so a sample can be short.
SAMPLE_S = 0.004
#: Rounds taken even when the budget is spent (two mirrored pairs: the fewest an interval can rest on).
MIN_ROUNDS = 4
#: Resamples of the quick check run after every round pair; only when it passes is the full interval (the one
#: reported, :data:`~matmul.measure.stats.BOOTSTRAP` resamples) computed, and the group stops if that is tight.
CHECK_RESAMPLES = 400
#: After waiting for quiet, the next candidate runs untimed for this long first. The wait is a sleep, and a
#: 2-core VM's CPU comes back from it slowly: qkv-sized kernels read 1.5-3x their time for the first 2-5 ms
#: after a 0.2 s sleep (and the first block after a pool switch read up to 8x), so without this the case
#: timed first after each switch lost to the others.
WARM_S = 0.01
#: A kernel whose one call lasts this long gets no such warm-up: the slow start is a few percent of it at
#: most, and a warm-up call would double the time of the slowest cases.
LONG_CALL_S = 0.1


@dataclass(frozen=True)
class RoundSettings:
    """How :func:`time_rounds` samples a group."""

    min_rounds: int = 10
    max_rounds: int = 400
    budget_s: float = 10.0
    ci_width: float = 0.03
    sample_s: float = SAMPLE_S
    min_calls: int = 1

    def __post_init__(self) -> None:
        if self.min_rounds < MIN_ROUNDS or self.min_rounds % 2:
            raise ValueError(f"min_rounds must be an even number >= 4 (mirrored pairs), got {self.min_rounds}")
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be at least min_rounds ({self.min_rounds})")
        if not (self.budget_s > 0 and 0 < self.ci_width < 1 and self.sample_s > 0 and self.min_calls >= 1):
            raise ValueError("need budget_s > 0, 0 < ci_width < 1, sample_s > 0 and min_calls >= 1; got "
                             f"{self.budget_s}, {self.ci_width}, {self.sample_s}, {self.min_calls}")


#: The grid's default sampling (``bench/`` overrides it from its options).
DEFAULT_ROUNDS = RoundSettings()


@dataclass
class Rounds:
    """What :func:`time_rounds` measured for one group."""

    samples: list[list[float]]  # per candidate, one per-call time per round, in round order
    calls: list[int]  # timed calls per block, per candidate
    anchor: int | None
    ratios: list[Ratio | None]  # each candidate's time over the anchor's (None for the anchor itself)
    converged: bool
    seconds: float
    settings: RoundSettings
    shadow: dict[int, list[float]] = field(default_factory=dict)  # per candidate: its shadow timer's samples

    @property
    def rounds(self) -> int:
        return len(self.samples[0])

    @property
    def widest(self) -> float:
        """The largest half-width of any candidate's ratio interval (0 without an anchor)."""
        return max((r.half_width for r in self.ratios if r is not None), default=0.0)


def _pool_key(cand: Candidate) -> str:
    return "tvm" if cand.kind == "tvm" else cand.name


def _warm_up(cand: Candidate, clock: Callable[[], float], seconds: float, call: bool) -> None:
    """Untimed calls for ``seconds`` (at least one where ``call``: the previous candidate evicted our tensors)."""
    start = clock()
    if call:
        cand.call()
    while clock() - start < seconds:
        cand.call()


def _block(cand: Candidate, calls: int, clock: Callable[[], float], warm: bool = True, warm_s: float = 0.0) -> float:
    """One sample: ``warm_s`` seconds (at least one call where ``warm``) untimed, then the median of ``calls``."""
    with cand.pool():
        _warm_up(cand, clock, warm_s, warm)
        return statistics.median(call_times(cand.call, calls, clock))


def _round(cands: Sequence[Candidate], calls: Sequence[int], samples: list[list[float]], last_pool: str | None,
           clock: Callable[[], float], settle: Callable[[], object],
           shadows: Mapping[int, Callable[[], float]] | None = None,
           shadow_samples: dict[int, list[float]] | None = None, fixed: bool = False,
           switch_warm: Sequence[float] | None = None, first_pair: int = 0) -> str | None:
    """One round: a block of every candidate, forward on even rounds and mirrored on odd ones.

    A candidate with a shadow sampler (another timer of the same kernel) is
    sampled by it right after its own block, in forward rounds (half the
    rounds: the check needs a median, not every round). ``fixed``: the fixed form,
    whose every block starts with a warm-up call. ``switch_warm``: per candidate, the
    untimed seconds its block starts with after a pool switch (default :data:`WARM_S`). ``first_pair``: the
    rotation this stream of rounds starts at (see :func:`_rotated`).
    """
    forward = len(samples[0]) % 2 == 0
    base = _rotated(cands, first_pair + len(samples[0]) // 2)
    order = base if forward else base[::-1]
    for n in order:
        warm_s = 0.0
        if _pool_key(cands[n]) != last_pool:  # another library's workers may still spin
            settle()
            last_pool = _pool_key(cands[n])
            warm_s = WARM_S if switch_warm is None else switch_warm[n]  # the CPU slowed down while we waited
        # A kernel that fills a sample with one call is long enough that reloading its tensors is noise
        # beside it: no warm-up call there (it would double the time of the slowest cases).
        samples[n].append(_block(cands[n], calls[n], clock, warm=calls[n] > 1 or fixed, warm_s=warm_s))
        if forward and shadows and n in shadows and shadow_samples is not None:
            with cands[n].pool():
                shadow_samples.setdefault(n, []).append(shadows[n]())
    return last_pool


def _rotated(cands: Sequence[Candidate], pair: int) -> list[int]:
    """The forward order of round pair ``pair``: the leading run of one pool's candidates rotated by ``pair``.

    In plain mirrored rounds (A B C, C B A, A B C, ...) the first candidate runs twice in a row where two
    pairs meet and the middle ones never do, and the edge is worth about 1% on this machine: an A/A pair read
    the copy 0.5% slower with the original first and 1.7% faster with the copy first. Rotating the leading
    run (the TVM kernels) each pair gives every candidate of it every position equally often, and no
    candidate of it meets itself across pairs. Each pair is still mirrored, so linear drift still cancels.
    """
    n = len(cands)
    lead = next((i for i in range(1, n) if _pool_key(cands[i]) != _pool_key(cands[0])), n)
    shift = pair % lead
    return [*range(shift, lead), *range(shift), *range(lead, n)]


def _ratios(samples: list[list[float]], anchor: int | None, resamples: int) -> list[Ratio | None]:
    if anchor is None:
        return [None] * len(samples)
    return [None if i == anchor else ratio_of_medians(s, samples[anchor], paired=True, resamples=resamples)
            for i, s in enumerate(samples)]


def time_rounds(
    cands: Sequence[Candidate],
    *,
    anchor: int | None = None,
    settings: RoundSettings = DEFAULT_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    settle: Callable[[], object] = wait_for_quiet,
    shadows: Callable[[int, int], Callable[[], float] | None] | None = None,
    first_pair: int = 0,
) -> Rounds:
    """Sample every candidate once per round, in mirrored order, until the ratios to ``anchor`` are tight.

    Without an ``anchor`` ``min_rounds`` rounds are taken (fewer, but at
    least :data:`MIN_ROUNDS`, once ``budget_s`` is spent). ``clock``
    and ``settle`` are for tests, which drive the timer with a synthetic clock.
    ``shadows(n, calls)`` may give, for candidate ``n`` and its calls per
    block, a second timer of the same kernel (per-call seconds), sampled
    right after each of its blocks; the samples land in ``Rounds.shadow``. ``first_pair``: the rotation of the
    TVM cases' order to start at, so that streams of rounds pooled later (one per worker process) continue it
    instead of each starting again at the first.
    """
    if not cands:
        raise ValueError("no candidates to time")
    if anchor is not None and not 0 <= anchor < len(cands):
        raise ValueError(f"anchor {anchor} is not one of the {len(cands)} candidates")
    t0 = clock()
    # calibrate: a block of each candidate lasts at least sample_s
    calls, switch_warm = [], []
    for c in cands:
        settle()
        with c.pool():
            _warm_up(c, clock, WARM_S, True)  # back to speed after the wait
            times: list[float] = []  # the fastest of 3 calls, or of fewer where they already fill a sample
            while len(times) < max(settings.min_calls, 3) and sum(times) < settings.sample_s:
                times += call_times(c.call, 1, clock)
            one = min(times)
        switch_warm.append(WARM_S if one < LONG_CALL_S else 0.0)
        calls.append(max(settings.min_calls, math.ceil(settings.sample_s / max(one, 1e-9))))
    samples: list[list[float]] = [[] for _ in cands]
    shadow_timers = {n: t for n in range(len(cands)) if shadows and (t := shadows(n, calls[n])) is not None}
    shadow: dict[int, list[float]] = {}
    if len(cands) == 1:
        anchor = None  # nothing to take a ratio against

    def tight(ratios: list[Ratio | None]) -> bool:
        return max(r.half_width for r in ratios if r is not None) <= settings.ci_width

    last_pool = None
    ratios: list[Ratio | None] | None = None
    while True:
        for _ in range(2):  # a mirrored pair of rounds
            last_pool = _round(cands, calls, samples, last_pool, clock, settle, shadow_timers, shadow,
                               switch_warm=switch_warm, first_pair=first_pair)
        done = len(samples[0])
        spent = clock() - t0 >= settings.budget_s
        if done < settings.min_rounds and not (spent and done >= MIN_ROUNDS):
            continue  # the budget caps even the minimum, down to two round pairs
        if anchor is None:
            break
        # The quick check (fewer resamples) only says when to look; the group stops on the reported interval
        # itself, so a group that stops early is never reported inconclusive by the resamples it skipped.
        if tight(_ratios(samples, anchor, CHECK_RESAMPLES)) and tight(ratios := _ratios(samples, anchor, BOOTSTRAP)):
            break
        ratios = None
        if done + 2 > settings.max_rounds or spent:
            break
    if ratios is None:
        ratios = _ratios(samples, anchor, BOOTSTRAP)  # the reported intervals, with every resample
    converged = anchor is None or tight(ratios)
    return Rounds(samples, calls, anchor, ratios, converged, clock() - t0, settings, shadow)


def time_interleaved(cands: Sequence[Candidate], *, blocks: int = 4, calls: int = 10,
                     warmup: int = 2) -> list[list[float]]:
    """Block medians of each candidate, in mirrored order: A B C, C B A, A B C, ...

    The fixed form of the interleaved timer: exactly ``blocks`` rounds of
    ``calls`` calls per block. With two candidates that is ABBA. Returns one
    list of ``blocks`` block medians per candidate, in the order given.
    """
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number >= 2 (mirrored pairs), got {blocks}")
    if calls < 1:
        raise ValueError(f"calls must be positive, got {calls}")
    if not cands:
        raise ValueError("no candidates to time")
    for c in cands:
        with c.pool():
            call_times(c.call, warmup)
    times: list[list[float]] = [[] for _ in cands]
    last_pool = None
    for _ in range(blocks):
        last_pool = _round(cands, [calls] * len(cands), times, last_pool, time.perf_counter, wait_for_quiet,
                           fixed=True)
    return times


def replay_timer(samples: Sequence[float]) -> Callable[[], float]:
    """A timer for pytest-benchmark that replays per-call seconds measured in interleaved rounds.

    pytest-benchmark reads the timer before and after each round's call; this one advances by the next
    sample in between, so each round's duration is exactly the sample measured for the case in that round.
    """
    ticks = iter([0.0] + [t for cum in itertools.accumulate(samples) for t in (cum, cum)])

    def interleaved_rounds() -> float:
        return next(ticks)

    return interleaved_rounds


def calls_for(cand: Candidate, calls: int, block_s: float = BLOCK_S) -> int:
    """At least ``calls``, and enough that one block of ``cand`` lasts ``block_s`` seconds."""
    with cand.pool():
        return max(calls, math.ceil(block_s / median_seconds(cand.call, calls=calls)))


__all__ = [
    "BLOCK_S",
    "CHECK_RESAMPLES",
    "DEFAULT_ROUNDS",
    "LONG_CALL_S",
    "MIN_ROUNDS",
    "SAMPLE_S",
    "WARM_S",
    "RoundSettings",
    "Rounds",
    "calls_for",
    "replay_timer",
    "time_interleaved",
    "time_rounds",
]
