"""Whole layers timed side by side: every schedule of one (model, seq, batch), PyTorch eager beside them.

The same interleaved timer as the kernel grid (:func:`~matmul.measure.interleave.time_rounds`): each
round runs one forward pass of every candidate (many where a pass is short) in mirrored order, and a
second, separately built copy of the first TVM schedule is the A/A control whose ratio to the first is
the group's noise floor. Every candidate's output is checked against the float64 NumPy layer before it
is timed; one that fails, or cannot be built, lands in ``errors`` and the others are still timed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.hardware import HostFacts, host_facts
from ..core.registry import Unavailable
from ..core.verify import VerificationError
from ..core.workloads import MatmulShape
from ..measure.candidates import Candidate
from ..measure.grid import AA_SUFFIX, CaseTiming, GroupTiming
from ..measure.interleave import DEFAULT_ROUNDS, RoundSettings, time_rounds
from ..measure.references import get_reference
from ..measure.stats import Ratio, ratio_of
from .layer import LayerSpec, inputs, reference, tolerance, torch_layer, weights
from .profile import BuiltLayer, build_layer, check_layer
from .schedule import check_schedule

#: The PyTorch eager reference's name among the schedules.
TORCH = "torch"


def check_e2e_name(name: str) -> str:
    """A schedule the pass takes, or ``torch``; a ValueError naming the choices otherwise."""
    return name if name == TORCH else check_schedule(name)


def layer_shape(spec: LayerSpec) -> MatmulShape:
    """The shape a layer's group and candidates are labelled with: tokens x hidden x hidden."""
    return MatmulShape(spec.tokens, spec.config.hidden, spec.config.hidden)


def torch_candidate(spec: LayerSpec, shape: MatmulShape, threads: int) -> Candidate:
    """PyTorch eager's layer on ``threads`` threads, checked against the float64 NumPy layer, as a timing candidate."""
    ref = get_reference(TORCH)
    reason = ref.unavailable()
    if reason:
        raise Unavailable(reason)
    w, x = weights(spec), inputs(spec)
    forward = torch_layer(spec, w)
    import torch

    xt = torch.from_numpy(x)
    with ref.threads(threads):
        out = forward(xt).numpy()
    err = float(np.max(np.abs(out - reference(spec, x, w))))
    if not err <= tolerance(spec):
        raise VerificationError(f"PyTorch's layer is off by {err:.3g} (bound {tolerance(spec):.3g})")
    return Candidate(TORCH, "reference", shape, "NT", lambda: forward(xt), threads,
                     {"library": "PyTorch eager (torch.nn.functional)", "threads": threads, "max_error": err},
                     _pool=lambda: ref.threads(threads))


def _tvm_candidate(built: BuiltLayer, shape: MatmulShape, threads: int, err: float, name: str) -> Candidate:
    described = {"max_error": err, "build_s": built.build_s, "plans": [p.as_dict() for p in built.plans]}
    return Candidate(name, "tvm", shape, "NT", built.call, threads, described, family="e2e")


def time_layer(spec: LayerSpec, names: list[str], *, settings: RoundSettings = DEFAULT_ROUNDS, aa: bool = True,
               facts: HostFacts | None = None, probe: bool = True) -> tuple[GroupTiming, dict[str, BuiltLayer]]:
    """Build, check and time ``names`` (schedules and ``torch``) on one layer, interleaved, with (``probe``) the
    FP32 peak probe in the same rounds (see :mod:`matmul.measure.grid`).

    Returns the group (cases with their samples and ratios to the anchor, ``errors``, the A/A ratio) and
    the built layers by schedule, for their per-op profiles.
    """
    facts = facts or host_facts()
    threads = facts.runtime_threads
    shape = layer_shape(spec)
    group = GroupTiming(shape, "NT")
    built: dict[str, BuiltLayer] = {}
    cands: list[Candidate] = []
    for name in names:
        try:
            if name == TORCH:
                cands.append(torch_candidate(spec, shape, threads))
                continue
            b = build_layer(spec, check_e2e_name(name), facts=facts)
            cands.insert(len(built), _tvm_candidate(b, shape, threads, check_layer(b), name))
            built[name] = b
        except (Unavailable, VerificationError, RuntimeError, ValueError) as err:
            group.errors[name] = err
    if not cands:
        return group, built
    if aa and built:
        first = next(iter(built))
        twin = build_layer(spec, first, facts=facts)
        group.aa_of = first
        cands.insert(1, _tvm_candidate(twin, shape, threads, check_layer(twin), first + AA_SUFFIX))
    if probe:  # the FMA peak in the same rounds, after the TVM layers (their thread pool: no switch)
        cands.insert(sum(c.kind == "tvm" for c in cands), group.probe(threads, facts))
    order = [c.name for c in cands]
    group.anchor = TORCH if TORCH in order else order[0]
    rounds = time_rounds(cands, anchor=order.index(group.anchor) if len(cands) > 1 else None, settings=settings)
    for n, cand in enumerate(cands):
        group.cases[cand.name] = CaseTiming(cand.name, rounds.samples[n], rounds.calls[n], rounds.ratios[n],
                                            cand.describe())
    group.finish(rounds)
    return group, built


def speedup(group: GroupTiming, over: str, name: str, estimator: str = "median") -> Ratio | None:
    """``over``'s time over ``name``'s in the same rounds (above 1: ``name`` is faster), or None; ``estimator``:
    of medians, or of best times (:func:`~matmul.measure.stats.best_time`, the figure to compare across runs)."""
    if over not in group.cases or name not in group.cases or over == name:
        return None
    return ratio_of(group.cases[over].samples, group.cases[name].samples, paired=True, estimator=estimator)


def case_info(group: GroupTiming, name: str) -> dict[str, Any]:
    """What one case saves in ``extra_info`` besides its profile: the group's figures and its speedups."""
    described = dict(group.cases[name].described)
    info: dict[str, Any] = {**group.summary(), **described, **described.pop("decisions", {})}
    info.pop("decisions", None)  # its keys (max_error, build_s, plans; the library for torch) are on top
    for other in (TORCH, "none"):
        for estimator, suffix in (("median", ""), ("best", "_best")):
            r = speedup(group, other, name, estimator)
            if r is not None:
                info[f"speedup_vs_{other}{suffix}"] = r.value
                info[f"speedup_vs_{other}{suffix}_ci"] = [r.lo, r.hi]
    return info


__all__ = ["TORCH", "case_info", "check_e2e_name", "layer_shape", "speedup", "time_layer", "torch_candidate"]
