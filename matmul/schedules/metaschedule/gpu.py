"""MetaSchedule on CUDA: design spaces built anywhere, records measured only on a GPU, and ``metaschedule_gpu``.

A GPU's database lives beside the CPU profiles, under ``<tuning root>/cuda/<arch>-<SMs>sm/`` (for example
``tuning_db/cuda/sm_80-108sm/``), in the same files, with the same ledger, staging and resumption as a CPU
profile's: :class:`GpuTuning` gives the CPU tuning code the folder name and the CUDA target it needs.

Measuring needs a GPU. :func:`check_can_measure` refuses, before any folder is touched, a tuning run on a
machine without one unless it measures on a GPU host through an RPC tracker; no timing that did not come from a
GPU ever enters a database. :func:`measure_candidates` runs MetaSchedule's CUDA search up to the point of
measuring (design spaces, sampling, post-processing with the GPU's limits), which needs no GPU, so the tests
check what it would measure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ...core.gpu import GpuSpec, gpu_present
from ...core.kernel import GPU_DTYPES, matmul_module
from ...core.registry import ScheduleContext, Variant, register
from ...core.store import default_root, workload_key
from ...core.workloads import MatmulShape
from .database import RECORD_FILE, DatabaseError, NoRecordError, apply_record, has_record, records

NAME = "metaschedule_gpu"
#: The folder under the tuning root that holds one database per GPU.
GPU_FOLDER = "cuda"


@dataclasses.dataclass(frozen=True)
class GpuTuning:
    """What the tuning code reads from a profile, for a GPU: its folder name, target, and facts to save."""

    spec: GpuSpec

    @property
    def profile(self) -> str:
        return f"{GPU_FOLDER}/{self.spec.arch}-{self.spec.sm_count}sm"

    #: No CPU tensor intrinsics to pre-register (the tuning code keys them by CPU architecture).
    arch = "cuda"
    runtime_threads = 1

    def target(self):
        return self.spec.target()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "cuda", "profile": self.profile, **self.spec.as_dict()}


def gpu_profile_dir(spec: GpuSpec, root: str | Path | None = None) -> Path:
    return Path(root or default_root()) / GpuTuning(spec).profile


def tune_command(shape: MatmulShape, dtype: str, layout: str, spec: GpuSpec) -> str:
    cmd = (f"python -m matmul tune --target cuda --arch {spec.arch} --shape {shape.M} {shape.K} {shape.N} "
           f"--dtype {dtype} --layout {layout}")
    return cmd + ("" if gpu_present() else " --rpc-tracker HOST:PORT --rpc-key KEY")


def check_can_measure(rpc: Any) -> None:
    """Refuse a CUDA tuning run that could not measure on a GPU.

    Raises
    ------
    RuntimeError
        No GPU here and no RPC tracker to one.
    """
    if rpc is None and not gpu_present():
        raise RuntimeError("CUDA tuning measures every candidate on a GPU and this machine has none "
                           "(tvm.cuda(0).exist is False); measure on a GPU host through an RPC tracker: "
                           "--rpc-tracker HOST:PORT --rpc-key KEY (nothing was written)")


def measure_candidates(shape: MatmulShape, spec: GpuSpec, *, dtype: str = "float32", layout: str = "NN",
                       count: int = 8, seed: int = 1) -> list[Schedule]:
    """The first ``count`` schedules MetaSchedule's CUDA search would measure, each post-processed and checked
    against the GPU's limits (``VerifyGPUCode``). Builds nothing and needs no GPU."""
    mod = matmul_module(shape, dtype, layout)
    ctx = ms.TuneContext(mod=mod, target=spec.target(), space_generator="post-order-apply",
                         search_strategy=ms.search_strategy.EvolutionarySearch(
                             population_size=max(64, count), init_min_unmeasured=count),
                         task_name="matmul", num_threads=1, rand_state=seed)
    ctx.pre_tuning(max_trials=count, num_trials_per_iter=count,
                   design_spaces=ctx.space_generator.generate_design_space(mod),
                   database=ms.database.MemoryDatabase(), cost_model=ms.cost_model.RandomModel())
    return [c.sch for c in ctx.generate_measure_candidates() or []]


def _missing(ctx: ScheduleContext) -> str | None:
    if has_record(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=GpuTuning(ctx.gpu)):
        return None
    return (f"no {NAME} record for {ctx.shape} {ctx.layout} {ctx.dtype} in "
            f"{gpu_profile_dir(ctx.gpu) / workload_key(ctx.shape, ctx.dtype, ctx.layout) / RECORD_FILE}; "
            f"tune it on a GPU with `{tune_command(ctx.shape, ctx.dtype, ctx.layout, ctx.gpu)}`")


def _records(ctx: ScheduleContext):
    if (why := _missing(ctx)) is not None:
        raise NoRecordError(why)
    return records(ctx.shape, dtype=ctx.dtype, layout=ctx.layout, facts=GpuTuning(ctx.gpu))


def _available(ctx: ScheduleContext) -> str | None:
    if (why := _missing(ctx)) is not None:
        return why
    try:
        _records(ctx)
    except (DatabaseError, LookupError) as err:
        return str(err)
    return None


def _decisions(ctx: ScheduleContext) -> dict[str, Any]:
    best = _records(ctx)[0]
    return {"profile": GpuTuning(ctx.gpu).profile, "run_us": 1e6 * min(float(x) for x in best.run_secs),
            "trace_steps": len(best.trace.insts)}


register(Variant(
    NAME, "search", lambda sch, ctx: apply_record(sch, _records(ctx)[0]),
    lambda _facts: "MetaSchedule's fastest CUDA record for the shape, from the GPU's database (tuned on a GPU)",
    decisions=_decisions, needs_record=True, available=_available, target="cuda", dtypes=GPU_DTYPES,
))

__all__ = ["GPU_FOLDER", "NAME", "GpuTuning", "check_can_measure", "gpu_profile_dir", "measure_candidates"]
