"""``dlight_gpu``: TVM's own GPU matmul rule (``tvm.s_tir.dlight.gpu.Matmul``), the baseline every GPU schedule meets.

For float16 it tensorizes with WMMA (16x16x16 fragments, float32 accumulators) when every one of M, N and K
exceeds 64, and otherwise tiles on CUDA cores; for float32 it tiles through shared memory with vthreads. The
rule schedules its own copy of the function and the variant returns that schedule (the registry's contract
allows it); its trace holds every step, as any other variant's does.

The first application imports TVM's CUDA tensor intrinsics, which the float16 rule needs (once per process;
before, the rule imported them itself on its first float16 use): about 500 TVMScript
functions, each of whose decorators calls ``inspect.stack()``, which reads the source line of every frame and
looks up each frame's module in all of ``sys.modules``. Under pytest, with PyTorch and pandas loaded, that took
117 s on a 2-core Zen 3; :func:`_intrinsics_imported` does the import with source lines read only for the
frame TVMScript reads.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir import dlight as dl

from ...core.registry import ScheduleContext

#: dlight's rules in the order ``ApplyDefaultSchedule`` would try them for a matmul: the first that applies wins
#: (``Matmul`` declines a one-row matmul, which ``GEMV`` takes).
RULES = (("Matmul", dl.gpu.Matmul), ("GEMV", dl.gpu.GEMV), ("Fallback", dl.gpu.Fallback))


#: The one outer frame of a decorator whose source line is read: TVMScript's ``is_defined_in_class`` reads
#: frame 2's (the line that applied the decorator) to tell a class body; while the intrinsics are imported
#: nothing reads the others' lines.
CLASS_FRAME = 2


def _frame_info(frame, context: int) -> inspect.FrameInfo:
    """As ``inspect.stack`` gives it; with no context, from the frame alone (``getframeinfo`` looks up the
    module of a frame whose file does not exist, as the import machinery's frozen frames, in all of
    ``sys.modules``)."""
    if context:
        info = inspect.getframeinfo(frame, context)
        return inspect.FrameInfo(frame, *info, positions=info.positions)
    return inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None)


@contextlib.contextmanager
def _shallow_stack() -> Iterator[None]:
    """``inspect.stack`` with the source line of frame :data:`CLASS_FRAME` only, for a while."""
    deep = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            frames.append(_frame_info(frame, context if len(frames) == CLASS_FRAME else 0))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = deep


def _intrinsics_imported() -> None:
    """Import TVM's tensor intrinsics (dlight's float16 rule imports them on first use) under
    :func:`_shallow_stack`; a no-op once imported."""
    if "tvm.s_tir.tensor_intrin" not in sys.modules:
        with _shallow_stack():
            import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the intrinsics)


def _rule_schedule(sch: Schedule, ctx: ScheduleContext) -> tuple[str, Schedule]:
    _intrinsics_imported()
    target = ctx.gpu.target()
    for name, rule in RULES:
        with target:
            done = rule().apply(sch.mod["main"], target, False)
        if done is not None:
            return name, done[0] if isinstance(done, list) else done
    raise ValueError(f"no dlight GPU rule ({', '.join(n for n, _ in RULES)}) applied to {ctx.shape} "
                     f"({ctx.dtype}, {ctx.layout})")


def apply(sch: Schedule, ctx: ScheduleContext) -> Schedule:
    return _rule_schedule(sch, ctx)[1]


def decisions(ctx: ScheduleContext) -> dict[str, Any]:
    """Which rule applied, and whether it used tensor cores (which intrinsics): read from its trace, not predicted."""
    from ...core.kernel import matmul_module

    name, done = _rule_schedule(Schedule(matmul_module(ctx.shape, ctx.dtype, ctx.layout)), ctx)
    intrins = sorted({str(inst.attrs[0]) for inst in done.trace.insts if inst.kind.name == "Tensorize"})
    return {"rule": f"dlight.gpu.{name}", "tensor_cores": bool(intrins), "intrinsics": ",".join(intrins)}
