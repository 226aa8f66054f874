"""``dlight_gpu``: TVM's own GPU matmul rule (``tvm.s_tir.dlight.gpu.Matmul``), the baseline every GPU schedule meets.

For float16 it tensorizes with WMMA (16x16x16 fragments, float32 accumulators) when every one of M, N and K
exceeds 64, and otherwise tiles on CUDA cores; for float32 it tiles through shared memory with vthreads. The
rule schedules its own copy of the function and the variant returns that schedule (the registry's contract
allows it); its trace holds every step, as any other variant's does.

The first application imports TVM's CUDA tensor intrinsics, which the float16 rule needs, through
:func:`~matmul.core.intrinsics.import_table` (once per process; the rule's own import took 117 s under pytest).
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir import dlight as dl

from ...core.intrinsics import import_table
from ...core.registry import ScheduleContext

#: The tensor-intrinsic table dlight's float16 rule imports on first use.
CUDA_TABLE = "tvm.s_tir.tensor_intrin.cuda"

#: dlight's rules in the order ``ApplyDefaultSchedule`` would try them for a matmul: the first that applies wins
#: (``Matmul`` declines a one-row matmul, which ``GEMV`` takes).
RULES = (("Matmul", dl.gpu.Matmul), ("GEMV", dl.gpu.GEMV), ("Fallback", dl.gpu.Fallback))


def _rule_schedule(sch: Schedule, ctx: ScheduleContext) -> tuple[str, Schedule]:
    import_table(CUDA_TABLE)
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
