"""Build a scheduled encoder layer for the Relax VM, check it against NumPy, and profile it per PrimFunc.

TVM 0.27's VM has no profiler (``VirtualMachine(..., profile=True)`` raises TypeError), so the per-op
figures come from ``vm.set_instrument``: a callback before and after every call the VM makes, timed with
``perf_counter``. The whole forward pass is timed by the VM's own ``time_evaluator`` on
``invoke_stateful``, with no callback installed. The two differ by the VM's own work (allocations,
shape checks) and the callbacks' cost; both are reported.

A matmul function's percent of peak is read against the FMA peak probe timed between the instrumented
passes, in the same minute, because the clock of these shared machines follows the neighbours' load (the
once-measured peak read 343 and 446 GFLOP/s in two runs minutes apart).
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from ..core.hardware import HostFacts, configure_runtime_threads, host_facts
from ..core.hotloop import AsmError, HotLoop, hot_loops
from ..core.verify import VerificationError
from ..measure.peak import peak_probe
from ..measure.timing import call_times
from ..schedules.metaschedule.database import NoRecordError
from .layer import SEED, LayerSpec, export, inputs, lower, reference, tolerance, weights
from .prepack import Packed, pack_args
from .schedule import FuncPlan, schedule_module
from .tune import tune_layer_command

log = logging.getLogger(__name__)

#: Calls of the peak probe after each instrumented pass (about 5 ms of 50 us calls).
PROBE_CALLS = 100


@dataclass
class BuiltLayer:
    """A compiled layer on the VM with its inputs bound: ``call()`` runs one forward pass."""

    spec: LayerSpec
    schedule: str
    plans: list[FuncPlan]
    executable: Any
    vm: Any
    args: list[Any]
    x: np.ndarray
    weights: dict[str, np.ndarray]
    build_s: float
    scheduled: tvm.IRModule | None = None  # the module compiled, its PrimFuncs as the pass left them
    packed: list[Packed] = field(default_factory=list)  # the weights ``args`` holds packed (see ``.prepack``)
    facts: HostFacts | None = None  # what it was built for (None: the host)

    def call(self) -> object:
        return self.vm["forward"](*self.args)

    def run(self) -> np.ndarray:
        return self.call().numpy()


def build_layer(spec: LayerSpec, schedule: str, *, facts: HostFacts | None = None, seed: int = SEED,
                root: str | Path | None = None) -> BuiltLayer:
    """Export, lower, schedule (see :func:`~.schedule.schedule_module`) and compile the layer for the host.

    The weights that the matmuls would pack on every call are packed here, once (see :mod:`.prepack`);
    under a ``@repack`` schedule name every forward pass packs them again.

    Raises
    ------
    NoRecordError
        ``metaschedule`` and a matmul of the layer without a record; the message gives the tune command.
    """
    facts = facts or host_facts()
    start = time.perf_counter()
    mod, names = export(spec)
    try:
        scheduled, plans, packed = schedule_module(lower(mod), schedule, facts=facts, root=root)
    except NoRecordError as err:
        raise NoRecordError(f"{err}; tune the layer with `{tune_layer_command(spec)}`") from None
    configure_runtime_threads()
    exe = tvm.compile(scheduled, facts.target())
    vm = relax.VirtualMachine(exe, tvm.cpu())
    w, x = weights(spec, seed), inputs(spec, seed)
    args = [tvm.runtime.tensor(a) for a in pack_args([x] + [w[n] for n in names], packed)]
    return BuiltLayer(spec, schedule, plans, exe, vm, args, x, w, time.perf_counter() - start, scheduled, packed,
                      facts)


def check_layer(built: BuiltLayer, expected: np.ndarray | None = None) -> float:
    """Max absolute error of the layer's output against the float64 reference.

    Raises
    ------
    VerificationError
        The error exceeds :func:`~.layer.tolerance`, or the output is not finite.
    """
    expected = reference(built.spec, built.x, built.weights) if expected is None else expected
    out = built.run()
    err = float(np.max(np.abs(out.astype("float64") - expected))) if np.all(np.isfinite(out)) else math.inf
    bound = tolerance(built.spec)
    if not err <= bound:
        raise VerificationError(f"{built.spec.label()} with schedule {built.schedule!r}: max error {err:.3g} "
                                f"exceeds {bound:.3g} against the float64 NumPy layer")
    return err


@dataclass
class OpRow:
    """One PrimFunc's share of a forward pass."""

    name: str
    kind: str
    schedule: str
    calls: float  # per forward pass
    seconds: float  # per forward pass, all calls
    share: float
    flops: int = 0  # per forward pass
    gflops: float | None = None
    pct_peak: float | None = None
    epilogue: str = ""
    #: A matmul's hot loop in the compiled layer (:mod:`~matmul.core.hotloop`); None elsewhere.
    loads_per_fma: float | None = None
    stack_loads: int | None = None


@dataclass
class Profile:
    """Per-PrimFunc times of a forward pass and the whole pass's time."""

    rows: list[OpRow]
    forward_s: float  # median of the VM's time_evaluator, no callbacks
    forward_samples: list[float]
    instrumented_s: float  # the rows' sum plus the VM's builtins, per pass
    matmul_share: float  # of the PrimFuncs' time
    peak_gflops: float | None  # the median of ``peak_samples`` where the probe ran, else the one given
    extra: dict[str, Any] = field(default_factory=dict)
    peak_samples: list[float] = field(default_factory=list)  # GFLOP/s of the probe, one per instrumented pass

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def op_times(built: BuiltLayer, *, repeat: int = 10, warmup: int = 2,
             between: Callable[[], object] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds and calls per forward pass of every function the VM calls (PrimFuncs and builtins).

    ``between`` runs after every instrumented pass, outside the VM (so outside the figures).
    """
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    started: dict[str, float] = {}

    def instrument(func, name, before_run, ret, *args):
        if before_run:
            started[name] = time.perf_counter()
        else:
            spent[name] += time.perf_counter() - started.pop(name)
            calls[name] += 1
        return relax.VMInstrumentReturnKind.NO_OP

    for _ in range(warmup):
        built.call()
    built.vm.set_instrument(instrument)
    try:
        for _ in range(repeat):
            built.call()
            if between is not None:
                between()
    finally:
        built.vm.set_instrument(lambda *a: relax.VMInstrumentReturnKind.NO_OP)
    return ({k: v / repeat for k, v in spent.items()}, {k: c / repeat for k, c in calls.items()})


def forward_times(built: BuiltLayer, *, number: int = 1, repeat: int = 10) -> list[float]:
    """Seconds per forward pass, ``repeat`` samples of ``number`` passes, by the VM's ``time_evaluator``."""
    fresh = relax.VirtualMachine(built.executable, tvm.cpu())  # one without the instrument
    fresh.set_input("forward", *built.args)
    ev = fresh.time_evaluator("invoke_stateful", tvm.cpu(), number=number, repeat=repeat)
    return [float(t) for t in ev("forward").results]


def peak_between_passes(probe: tuple[Callable[[], object], float], calls: int = PROBE_CALLS
                        ) -> tuple[Callable[[], None], list[float]]:
    """A ``between`` for :func:`op_times` that times ``calls`` calls of ``probe`` (a call and its flops, as from
    :func:`~matmul.measure.peak.peak_probe`), and the list it appends the GFLOP/s of their median call to."""
    call, flops = probe
    samples: list[float] = []

    def sample() -> None:
        samples.append(flops / statistics.median(call_times(call, calls)) / 1e9)

    return sample, samples


def layer_hot_loops(built: BuiltLayer) -> dict[str, HotLoop]:
    """Each PrimFunc's hot loop, read from the layer's compiled library (empty, with a warning, where the
    assembly cannot be printed or read)."""
    try:
        return hot_loops(built.executable.mod.imports[0].inspect_source("asm"), arch=(built.facts or host_facts()).arch)
    except (AsmError, IndexError, tvm.error.TVMError) as err:
        log.warning("no hot loops for %s: %s", built.spec.label(), err)
        return {}


def profile_layer(built: BuiltLayer, *, repeat: int = 10, peak_gflops: float | None = None) -> Profile:
    """The per-PrimFunc table (sorted by time) and the forward pass's time.

    ``peak_gflops`` None: the FMA peak probe is timed between the instrumented passes and each matmul
    function's percent of peak is read against the median of those samples; a number is used as given.
    """
    between, peak_samples = (None, []) if peak_gflops is not None else peak_between_passes(
        peak_probe(built.facts or host_facts()))
    seconds, calls = op_times(built, repeat=repeat, between=between)
    if peak_samples:
        peak_gflops = statistics.median(peak_samples)
    plans = {p.name: p for p in built.plans}
    funcs = {k: v for k, v in seconds.items() if k in plans}
    total = sum(funcs.values()) or math.nan
    rows = []
    loops = layer_hot_loops(built)
    for name, s in sorted(funcs.items(), key=lambda kv: -kv[1]):
        p = plans[name]
        flops = int(p.matmul.flops() * calls[name]) if p.matmul else 0
        gflops = flops / s / 1e9 if flops and s > 0 else None
        loop = loops.get(name) if p.kind == "matmul" else None
        rows.append(OpRow(name, p.kind, p.schedule, calls[name], s, s / total, flops, gflops,
                          100 * gflops / peak_gflops if gflops and peak_gflops else None, p.epilogue,
                          round(loop.loads_per_fma, 3) if loop else None, loop.stack_loads if loop else None))
    samples = forward_times(built, repeat=repeat)
    matmul = sum(r.seconds for r in rows if r.kind == "matmul")
    return Profile(rows, statistics.median(samples), samples, sum(seconds.values()), matmul / total, peak_gflops,
                   peak_samples=peak_samples)


__all__ = ["PROBE_CALLS", "BuiltLayer", "OpRow", "Profile", "build_layer", "check_layer", "forward_times",
           "layer_hot_loops", "op_times", "peak_between_passes", "profile_layer"]
