"""Does the schedule pass cost anything? Each matmul function of a scheduled layer beside its kernel alone.

Issue 17 asks that the matmul PrimFuncs of a scheduled layer run within 10% of the same shapes timed
alone as kernels. :func:`fused_vs_kernels` schedules the layer as :func:`~.profile.build_layer` does,
checks the whole layer against the float64 NumPy layer (so every function timed here is one that computes
the right thing), then compiles each 2-D matmul function of it on its own and times it interleaved
(:func:`~matmul.measure.interleave.time_interleaved`) with the canonical kernel of the same M, K, N and
layout under the same variant, and with a second build of the function as the A/A control. The fused
function does more than the kernel (its epilogue: bias, GELU, residual), so a ratio near 1 says the
epilogue rides free on the write-back. Where the function reads its weight pre-packed (``b_prepacked``,
see :mod:`.prepack`), so does its kernel: built with the same constant-B context and given B packed once,
outside the timed calls, so the two do the same work; under a ``@repack`` schedule both pack on every
call. A batched function (attention's ``heads x (S x d x S)``) has no
canonical kernel to stand beside; it is listed with the reason and not timed.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

import numpy as np
import tvm

from ..core.hardware import HostFacts, configure_runtime_threads, host_facts
from ..core.verify import VerificationError
from ..measure.candidates import Candidate, prepare
from ..measure.interleave import calls_for, time_interleaved
from ..measure.stats import Ratio, ratio_of_medians
from .detect import MatmulFunc
from .layer import LayerSpec
from .profile import BuiltLayer, build_layer, check_layer
from .schedule import METASCHEDULE, NONE, check_schedule, schedule_names, split_schedule

#: The issue's bound: a fused function at most this much slower than its kernel alone.
WITHIN = 1.10


@dataclass(frozen=True)
class FusedVsKernel:
    """One matmul function of the layer against its shape's canonical kernel."""

    name: str
    matmul: MatmulFunc
    epilogue: str
    prepacked: bool = False  # the function reads its weight pre-packed, and so does its kernel
    fused_blocks: tuple[float, ...] = ()
    kernel_blocks: tuple[float, ...] = ()
    twin_blocks: tuple[float, ...] = ()
    skipped: str = ""  # why it was not timed
    kernel: str = ""  # the kernel it was timed beside

    @functools.cached_property
    def slowdown(self) -> Ratio | None:
        """The fused function's time over the kernel's (above 1: the function is slower), with its interval."""
        return ratio_of_medians(self.fused_blocks, self.kernel_blocks, paired=True) if self.fused_blocks else None

    @functools.cached_property
    def noise(self) -> Ratio | None:
        """The A/A pair: the function over its second build."""
        return ratio_of_medians(self.fused_blocks, self.twin_blocks, paired=True) if self.twin_blocks else None

    def row(self) -> dict[str, object]:
        s, a = self.slowdown, self.noise
        shape = self.matmul.shape
        return {
            "primfunc": self.name, "M": shape.M, "K": shape.K, "N": shape.N, "layout": self.matmul.layout,
            "epilogue": self.epilogue or "-", "b_prepacked": self.prepacked, "kernel": self.kernel or None,
            "fused_ms": 1e3 * statistics.median(self.fused_blocks) if s else None,
            "kernel_ms": 1e3 * statistics.median(self.kernel_blocks) if s else None,
            "fused_over_kernel": s.value if s else None, "ci_lo": s.lo if s else None, "ci_hi": s.hi if s else None,
            "p": s.p if s else None, "aa": a.value if a else None,
            "within_10pct": (s.value <= WITHIN) if s else None, "skipped": self.skipped,
        }


def _arguments(func: tvm.tirx.PrimFunc, rng: np.random.Generator) -> list[tvm.runtime.Tensor]:
    """Random inputs (and outputs) of ``func``'s buffers, uniform in [-1, 1)."""
    out = []
    for buf in func.params:  # in TVM 0.27 a PrimFunc's params are its buffers
        shape = [int(d) for d in buf.shape]
        out.append(tvm.runtime.tensor(rng.uniform(-1, 1, shape).astype(buf.dtype)))
    return out


def _function_candidate(func: tvm.tirx.PrimFunc, info: MatmulFunc, name: str, facts: HostFacts,
                        rng: np.random.Generator) -> Candidate:
    main = func.with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": main}), target=facts.target())
    fn, args = lib["main"], _arguments(func, rng)
    fn(*args)
    out = args[-1].numpy()
    if not np.all(np.isfinite(out)):
        raise VerificationError(f"{name} alone wrote non-finite values")
    return Candidate(name, "tvm", info.shape, info.layout, lambda: fn(*args), facts.runtime_threads)


def _kernel(variant: str, info: MatmulFunc, prepacked: bool, facts: HostFacts) -> Candidate:
    """The canonical kernel of ``info``'s shape under ``variant``, verified; reading B packed once (as a weight)
    where the layer's function reads its weight so, so the two do the same work."""
    kernel = prepare(variant, info.shape, layout=info.layout, facts=facts, fresh=True, b_constant=prepacked)
    if prepacked and not kernel.decisions.get("b_prepacked"):
        raise ValueError(f"{variant!r} does not read B pre-packed on {info.describe()}; its function in the layer "
                         "should not have been marked prepacked")
    if prepacked:
        kernel.name = f"{variant} (B pre-packed)"
    return kernel


def check_versus(schedule: str) -> str:
    """``schedule`` if it is a variant with a kernel of its own; a ValueError naming the choices otherwise."""
    check_schedule(schedule)
    if schedule in (NONE, METASCHEDULE):
        choices = ", ".join(n for n in schedule_names() if n not in (NONE, METASCHEDULE))
        raise ValueError(f"schedule {schedule!r} has no canonical kernel of the same schedule to compare the layer's "
                         f"functions with; choose a variant: {choices}")
    return schedule


def fused_vs_kernels(spec: LayerSpec, schedule: str, *, facts: HostFacts | None = None, blocks: int = 8,
                     calls: int = 10, progress=None, built: BuiltLayer | None = None) -> list[FusedVsKernel]:
    """Every matmul function of ``spec``'s layer under ``schedule`` against its kernel alone, in name order.

    ``built`` is the layer already built with that schedule (the command's), so it is not built twice.

    Raises
    ------
    ValueError
        ``schedule`` is not a variant (``none`` and ``metaschedule`` have no kernel of the same schedule).
    VerificationError
        The scheduled layer is wrong against the float64 NumPy layer.
    """
    check_versus(schedule)
    facts = facts or host_facts()
    configure_runtime_threads()
    if built is None:
        built = build_layer(spec, schedule, facts=facts)
    elif (built.spec, built.schedule) != (spec, schedule) or built.scheduled is None:
        raise ValueError(f"the built layer is {built.spec.label()} under {built.schedule!r}, not {spec.label()} "
                         f"under {schedule!r}")
    check_layer(built)
    rng = np.random.default_rng(spec.seq)
    results = []
    for plan in built.plans:
        if plan.kind != "matmul":
            continue
        info = plan.matmul
        if info.batch:
            results.append(FusedVsKernel(plan.name, info, plan.epilogue,
                                         skipped=f"batched ({info.describe()}): no canonical batched kernel"))
            continue
        func = built.scheduled[plan.name]
        fused = _function_candidate(func, info, plan.name, facts, rng)
        twin = _function_candidate(func, info, plan.name + " (A/A)", facts, rng)
        kernel = _kernel(split_schedule(schedule)[0], info, bool(plan.prepacked), facts)
        n = calls_for(fused, calls)
        f, k, t = time_interleaved([fused, kernel, twin], blocks=blocks, calls=n)
        res = FusedVsKernel(plan.name, info, plan.epilogue, bool(plan.prepacked), tuple(f), tuple(k), tuple(t),
                            kernel=kernel.name)
        results.append(res)
        if progress:
            progress(f"{plan.name} ({info.describe()}): fused {1e3 * statistics.median(f):.3f} ms, kernel "
                     f"{1e3 * statistics.median(k):.3f} ms, {res.slowdown.value:.3f}x")
    return results


__all__ = ["WITHIN", "FusedVsKernel", "check_versus", "fused_vs_kernels"]
