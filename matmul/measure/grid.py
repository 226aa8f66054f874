"""One shape of the benchmark grid, timed as a group: every case in the same interleaved rounds.

``bench/`` times a grid of kernel x M x variant x layout. Cases of one shape
and layout are built and verified first, then sampled together by
:func:`~matmul.measure.interleave.time_rounds`, so every case's figure and
every ratio between cases comes from the same machine states.

Two controls ride along in the same rounds:

- an **A/A pair**: a second, separately built copy of one TVM case (its own
  build, its own tensors). Its ratio to the first is the shape's *noise
  floor*: two figures of this run that differ by less are not different.
- the **anchor**: the A/A original (see :func:`time_group`). Sampling goes on until every case's ratio to the anchor has a confidence
  interval within ``+-ci_width`` or the shape's time budget is spent; then
  the group is *inconclusive*, and says so.
- a **peak probe**: the FMA loop of :func:`~matmul.measure.peak.peak_probe`,
  timed like a TVM case. Each case's time over the probe's, round by round,
  is its share of the FP32 peak in the same machine state (``vs_peak``),
  which a peak measured once per run cannot give on a host whose clock moves
  with its neighbours' load.

The agreement check rides along too: each TVM case is also sampled by TVM's
own ``time_evaluator`` right after each of its blocks; NumPy is timed alone
in a fresh process before and after the rounds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..core.hardware import HostFacts
from ..core.registry import Unavailable
from ..core.workloads import MatmulShape
from .candidates import Candidate, prepare
from .interleave import DEFAULT_ROUNDS, Rounds, RoundSettings, time_rounds
from .peak import PROBE, peak_probe
from .references import numpy_alone
from .stats import Ratio, best_time, noise_floor, ratio_of, ratio_of_medians
from .timing import wait_for_quiet

#: The A/A copy's name in a group.
AA_SUFFIX = "#copy"
#: Preferred A/A source: the suite's own hardware-aware schedule (always available).
AA_PREFERRED = "rule_based"


@dataclass
class CaseTiming:
    """One case's samples and figures from its group's rounds."""

    name: str
    samples: list[float]  # per-call seconds, one per round
    calls: int  # timed calls per sample
    to_anchor: Ratio | None  # this case's time over the anchor's (None: the anchor itself)
    described: dict = field(default_factory=dict)  # Candidate.describe(): kind, family, decisions, ...
    vs_numpy: Ratio | None = None  # NumPy's time over this case's, in the same rounds: the speedup over NumPy
    vs_numpy_best: Ratio | None = None  # the same of best times (stats.best_time): the figure to compare across runs
    vs_peak: Ratio | None = None  # the peak probe's time over this case's, in the same rounds (see pct_peak)
    agreement_check: str | None = None
    agreement_median_s: float | None = None
    by_process: list[float] | None = None  # timed in several processes: the best time in each
    process_spread: float | None = None  # ... and the largest over the smallest of its ratio to the anchor there

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    @property
    def best_s(self) -> float:
        """The mean of the fastest samples (:func:`~matmul.measure.stats.best_time`)."""
        return best_time(self.samples)

    def pct_peak(self, flops: float, probe_flops: float) -> Ratio | None:
        """Percent of the FP32 peak reached, against the probe timed in the same rounds, with its interval."""
        if self.vs_peak is None:
            return None
        scale = 100 * flops / probe_flops
        r = self.vs_peak
        return Ratio(r.value * scale, r.lo * scale, r.hi * scale, r.p, r.n_x, r.n_y)


@dataclass
class GroupTiming:
    """A group's cases, the cases that could not be timed (and why), and the A/A control."""

    shape: MatmulShape
    layout: str
    cases: dict[str, CaseTiming] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    anchor: str | None = None
    aa_of: str | None = None
    aa: Ratio | None = None
    aa_best: Ratio | None = None  # the same pair by best times: the floor of comparisons between runs
    converged: bool = True
    widest: float = 0.0
    widest_case: str | None = None  # the case whose ratio to the anchor had the widest interval: what kept sampling
    rounds: int = 0
    seconds: float = 0.0
    peak: CaseTiming | None = None  # the peak probe's samples (None: no probe was timed)
    probe_flops: float = 0.0  # the probe's flops per call
    processes: int = 1  # how many processes timed the group (see matmul.measure.workers)
    aa_process_spread: float | None = None  # ... and how far the A/A copy's ratio to its original moved there

    def probe(self, threads: int, facts: HostFacts | None = None) -> Candidate:
        """The FP32 peak probe as one more TVM candidate of this group's rounds (its flops noted here);
        :meth:`finish` turns its samples into every case's ``vs_peak``."""
        call, self.probe_flops = peak_probe(facts)
        return Candidate(PROBE, "tvm", self.shape, self.layout, call, threads, {"probe": "FP32 FMA loop"}, "control")

    @property
    def peak_gflops(self) -> float | None:
        """The FP32 peak measured by the probe in this group's rounds (median), or None."""
        return None if self.peak is None else self.probe_flops / self.peak.median_s / 1e9

    @property
    def floor(self) -> float | None:
        """The A/A noise floor (0.02: differences below 2% are noise), or None without an A/A pair."""
        return None if self.aa is None else noise_floor(self.aa)

    @property
    def floor_best(self) -> float | None:
        """The A/A noise floor of best times: the floor of comparisons between runs, or None without a pair."""
        return None if self.aa_best is None else noise_floor(self.aa_best)

    def case(self, name: str) -> CaseTiming:
        """``name``'s timing; raises what preparing it raised (``Unavailable``: its family cannot serve it)."""
        if name in self.errors:
            raise self.errors[name]
        return self.cases[name]

    def finish(self, rounds: Rounds) -> None:
        """Take the rounds' convergence and length, and turn the A/A copy's case into the group's A/A ratio."""
        self.converged, self.widest, self.rounds, self.seconds = (rounds.converged, rounds.widest, rounds.rounds,
                                                                  rounds.seconds)
        widths = {n: c.to_anchor.half_width for n, c in self.cases.items() if c.to_anchor is not None}
        self.widest_case = max(widths, key=widths.__getitem__) if widths else None  # the copy and probe included
        if self.aa_of is not None:
            orig, copy = self.cases[self.aa_of], self.cases.pop(self.aa_of + AA_SUFFIX)
            self.aa = ratio_of_medians(copy.samples, orig.samples, paired=True)
            self.aa_best = ratio_of(copy.samples, orig.samples, paired=True, estimator="best")
        if PROBE in self.cases:
            self.peak = self.cases.pop(PROBE)
            for case in self.cases.values():
                case.vs_peak = ratio_of_medians(self.peak.samples, case.samples, paired=True)

    def brief(self, label: str) -> dict:
        """One line of the run's noise-floor summary (``machine_info`` and the end of the terminal output)."""
        return {"shape": label, "aa_variant": self.aa_of, "aa_ratio": None if self.aa is None else self.aa.value,
                "noise_floor": self.floor,
                "noise_floor_best": self.floor_best,
                "inconclusive": not self.converged, "widest_half_width": self.widest, "widest_case": self.widest_case,
                "rounds": self.rounds, "seconds": self.seconds, "peak_gflops_in_rounds": self.peak_gflops,
                "processes": self.processes, "aa_process_spread": self.aa_process_spread, **self._widest_spread()}

    def _widest_spread(self) -> dict:
        """The case whose ratio to the anchor moved most between the processes that timed the group."""
        spreads = {n: c.process_spread for n, c in self.cases.items() if c.process_spread is not None}
        if not spreads:
            return {"process_spread": None, "process_spread_case": None}
        name = max(spreads, key=spreads.__getitem__)
        return {"process_spread": spreads[name], "process_spread_case": name}

    def summary(self) -> dict:
        """What every case of the group carries in its ``extra_info``."""
        return {
            "interleaved": True, "group_rounds": self.rounds, "group_seconds": self.seconds, "anchor": self.anchor,
            "inconclusive": not self.converged, "group_widest_half_width": self.widest,
            "group_widest_case": self.widest_case,
            "aa_variant": self.aa_of, "aa": None if self.aa is None else self.aa.as_dict(), "noise_floor": self.floor,
            "noise_floor_best": self.floor_best,
            "peak_gflops_in_rounds": self.peak_gflops, "processes": self.processes,
        }


def _aa_source(prepared: dict[str, Candidate], aa: str | None) -> str | None:
    if aa is None:
        return None
    if aa != "auto":
        return aa if aa in prepared and prepared[aa].kind == "tvm" else None
    if AA_PREFERRED in prepared:
        return AA_PREFERRED
    return next((n for n, c in prepared.items() if c.kind == "tvm"), None)


@dataclass
class Measured:
    """What one process measured of a group, before the A/A pair and the probe are taken apart: plain data, so
    a worker process (:class:`~matmul.measure.workers.Workers`) can send it back and :func:`assemble` can pool
    several processes'."""

    names: list[str]  # in timing order: the A/A copy and the probe included
    samples: list[list[float]]  # per name, one per-call time per round
    calls: list[int]
    described: dict[str, dict]  # Candidate.describe() per name (empty where the caller skipped it)
    errors: dict[str, BaseException]
    aa_of: str | None = None
    anchor: str | None = None
    probe_flops: float = 0.0
    seconds: float = 0.0
    shadow: dict[str, list[float]] = field(default_factory=dict)  # TVM's time_evaluator beside each block
    alone: list[float] = field(default_factory=list)  # NumPy alone in a fresh process, before and after


def measure_group(names: list[str], shape: MatmulShape, *, layout: str = "NN",
                  settings: RoundSettings = DEFAULT_ROUNDS, aa: str | None = "auto",
                  anchor: str | None = None, probe: bool = True, describe: bool = True,
                  alone_before: bool = True, alone_after: bool = True, first_pair: int = 0) -> Measured:
    """Build, verify and time ``names`` on ``shape`` together in this process (see :func:`time_group`).

    ``describe``: read each candidate's decisions and assembly; ``alone_before`` / ``alone_after``: time NumPy
    alone in a fresh process before / after the rounds, for its agreement figure; ``first_pair``: where the
    rounds' rotation starts. Where several processes time the group (:mod:`~matmul.measure.workers`), the
    first reads the assembly (the others would read the same) and times NumPy alone before its rounds, the
    last after its own, so the two bracket every process's rounds as they bracket one's, and the rotation
    runs on from one process to the next."""
    prepared: dict[str, Candidate] = {}
    errors: dict[str, BaseException] = {}
    for name in names:
        try:
            prepared[name] = prepare(name, shape, layout=layout)
        except (Unavailable, AssertionError, RuntimeError, ValueError) as err:  # named, re-raised by its own case
            errors[name] = err
    if not prepared:
        return Measured([], [], [], {}, errors)
    aa_of = _aa_source(prepared, aa)
    # TVM kernels first, then each vendor library: one pool switch each way per round. The A/A copy sits
    # right beside its original, so mirrored rounds give the two the same neighbours and the same share of
    # first-after-a-switch blocks.
    order = [c for c in prepared.values() if c.kind == "tvm"]
    if aa_of is not None:
        twin = prepare(aa_of, shape, layout=layout, fresh=True)
        twin.name = aa_of + AA_SUFFIX
        order.insert(order.index(prepared[aa_of]) + 1, twin)
    holder = GroupTiming(shape, layout)
    if probe:  # with the TVM kernels: the same thread pool, no switch
        order.append(holder.probe(next(iter(prepared.values())).threads))
    order += [c for c in prepared.values() if c.kind != "tvm"]
    names_in = [c.name for c in order]
    anchor = anchor if anchor in prepared else aa_of or next(iter(prepared))
    at = names_in.index(anchor) if len(order) > 1 else None

    alone = [_alone(prepared, shape, layout)] if alone_before else []

    def shadow(n: int, calls: int):
        return order[n].native_timer(calls) if order[n].kind == "tvm" and order[n].kernel is not None else None

    rounds = time_rounds(order, anchor=at, settings=settings, shadows=shadow, first_pair=first_pair)
    if alone_after:
        alone.append(_alone(prepared, shape, layout))
    described = {c.name: c.describe() for c in order} if describe else {}
    return Measured(names_in, rounds.samples, rounds.calls, described, errors, aa_of, anchor, holder.probe_flops,
                    rounds.seconds, {names_in[n]: s for n, s in rounds.shadow.items()},
                    [a for a in alone if a is not None])


def assemble(shape: MatmulShape, layout: str, parts: list[Measured],
             settings: RoundSettings = DEFAULT_ROUNDS) -> GroupTiming:
    """The group's figures from one or more processes' :class:`Measured`: each case's samples pooled in process
    order (round ``i`` of every case still comes from the same moment), its ratios, the A/A pair and the probe.

    A case that failed in any process is not timed (its error is kept). With several processes each case also
    keeps its best time per process (``by_process``) and the spread of its ratio to the anchor over them.
    """
    group = GroupTiming(shape, layout, processes=len(parts))
    for part in parts:
        for name, err in part.errors.items():
            group.errors.setdefault(name, err)
    names = [n for n in parts[0].names if n not in group.errors and all(n in p.names for p in parts)]
    if not names:
        return group
    first = parts[0]
    group.aa_of = first.aa_of if first.aa_of in names and first.aa_of + AA_SUFFIX in names else None
    group.anchor = first.anchor if first.anchor in names else group.aa_of or next(
        (n for n in names if n != PROBE), None)
    group.probe_flops = first.probe_flops
    pooled = {n: [t for p in parts for t in p.samples[p.names.index(n)]] for n in names}
    anchor = group.anchor if len(names) > 1 else None
    ratios = [None if n == anchor or anchor is None else ratio_of_medians(pooled[n], pooled[anchor], paired=True)
              for n in names]
    converged = all(r.half_width <= settings.ci_width for r in ratios if r is not None)
    shadow = {n: [t for p in parts for t in p.shadow.get(n, [])] for n in names}
    alone = [a for p in parts for a in p.alone]
    numpy = pooled.get("numpy")
    for n, r in zip(names, ratios):
        described = next((p.described[n] for p in parts if n in p.described), {})
        case = CaseTiming(n, pooled[n], first.calls[first.names.index(n)], r, described)
        if shadow[n]:
            case.agreement_check, case.agreement_median_s = "time_evaluator", statistics.median(shadow[n])
        elif n == "numpy" and len(alone) >= 2:
            case.agreement_check, case.agreement_median_s = "numpy_alone", statistics.geometric_mean(alone)
        if numpy is not None and n not in ("numpy", PROBE):
            case.vs_numpy = ratio_of_medians(numpy, case.samples, paired=True)
            case.vs_numpy_best = ratio_of(numpy, case.samples, paired=True, estimator="best")
        if len(parts) > 1:
            case.by_process = [best_time(p.samples[p.names.index(n)]) for p in parts]
        group.cases[n] = case
    if len(parts) > 1 and anchor is not None:
        base = group.cases[anchor].by_process
        for n, case in group.cases.items():
            if n != anchor:
                to_anchor = [b / a for b, a in zip(case.by_process, base)]
                case.process_spread = max(to_anchor) / min(to_anchor)
    if group.aa_of is not None:  # the copy's spread is the control: what the same code reads apart by chance
        group.aa_process_spread = group.cases[group.aa_of + AA_SUFFIX].process_spread
    rounds = Rounds(list(pooled.values()), [group.cases[n].calls for n in names], None, ratios, converged,
                    sum(p.seconds for p in parts), settings)
    group.finish(rounds)
    return group


class Sampler(Protocol):
    """Somewhere else to time a group: :class:`~matmul.measure.workers.Workers` (worker processes)."""

    def measure(self, spec: dict, settings: RoundSettings) -> list[Measured]:
        """One :class:`Measured` per process for :func:`measure_group`'s arguments ``spec``."""
        ...


def time_group(names: list[str], shape: MatmulShape, *, layout: str = "NN",
               settings: RoundSettings = DEFAULT_ROUNDS, aa: str | None = "auto",
               anchor: str | None = None, probe: bool = True, workers: Sampler | None = None) -> GroupTiming:
    """Build, verify and time ``names`` on ``shape`` together, with an A/A copy of one TVM case and (``probe``)
    the FP32 peak probe.

    ``aa``: the case to copy ("auto": rule_based if present, else the first
    TVM case; None: no A/A pair). ``anchor``: the case every ratio is taken
    against while deciding when to stop (default: the A/A original, a TVM
    kernel: NumPy's blocks after a pool switch scatter far more, and an
    anchor's scatter widens every ratio). A case that cannot be prepared
    (unavailable, or a wrong result) lands in ``errors`` and the others are
    still timed.

    ``workers``: time the group once in each of these worker processes instead of here, each with its share of
    the rounds and the budget, and pool the samples (see :class:`~matmul.measure.workers.Workers`).
    """
    spec = dict(names=names, shape=shape, layout=layout, aa=aa, anchor=anchor, probe=probe)
    if workers is None:
        return assemble(shape, layout, [measure_group(settings=settings, **spec)], settings)
    return assemble(shape, layout, workers.measure(spec, settings), settings)


def widest_cases(briefs: Iterable[dict]) -> str:
    """Which case had the widest interval in each inconclusive group of ``briefs`` (:meth:`GroupTiming.brief`, or
    any mapping with ``inconclusive`` and ``widest_case``), most often first: ``"torch in 9, metaschedule in 4"``.
    One case that scatters more than the others (on a 2-core VM, PyTorch's own time spread 2x between calls
    timed alone) keeps its whole group sampling to the budget; this names it, so the other cases' figures are
    not read as the noisy ones. Empty when no group is inconclusive."""
    counts = Counter(b.get("widest_case") or "no case named" for b in briefs if b.get("inconclusive"))
    return ", ".join(f"{name} in {n}" for name, n in counts.most_common())


def _alone(prepared: dict[str, Candidate], shape: MatmulShape, layout: str) -> float | None:
    """NumPy timed alone in a fresh process (only when the group has numpy)."""
    if "numpy" not in prepared:
        return None
    wait_for_quiet()  # our own BLAS threads must not spin beside the child
    return numpy_alone([shape], layout=layout, threads=prepared["numpy"].threads, calls=20)[shape]




__all__ = ["AA_PREFERRED", "AA_SUFFIX", "CaseTiming", "GroupTiming", "Measured", "Sampler", "assemble",
           "measure_group", "time_group", "widest_cases"]
