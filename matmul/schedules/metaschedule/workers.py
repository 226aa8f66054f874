"""Builder and runner worker processes kept for the life of the process that tunes.

TVM's ``LocalBuilder`` starts a new pool of worker processes for its sanity
check and again for every batch it builds, and every ``LocalRunner`` starts its
own. Each worker imports TVM, and PyTorch too when it is installed (tvm_ffi
imports it eagerly): 3-4 s of a 2-core machine per worker before it builds
anything, five workers per tuned task. A layer's six small tasks took 128 s to
tune 2 trials each, most of it in those imports. Here one builder pool and one
runner serve every run of the process; a builder worker is replaced after
:data:`BUILDS_PER_WORKER` candidates, which bounds the memory growth TVM
restarts its pools for.
"""

from __future__ import annotations

import functools

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_export
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

#: Seconds a builder worker may take per candidate. The first candidate of a
#: fresh worker pays the worker's imports (TVM, and PyTorch when installed,
#: which tvm_ffi imports eagerly).
BUILD_TIMEOUT_S = 90

#: Candidates a builder worker builds before a fresh one replaces it.
BUILDS_PER_WORKER = 256


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params=None) -> tvm.runtime.Module:
    """MetaSchedule's default CPU build, without importing ``tvm.s_tir.tensor_intrin``.

    The default build imports every tensor-intrinsic table (CUDA, ROCm,
    Hexagon, ARM) in each new builder worker: 24 s on the 2-core machine, 35 s
    with PyTorch installed, beyond the default 30 s timeout, so every
    candidate failed to build. Plain fp32 matmul on a CPU tensorizes nothing.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def build_and_export(mod: tvm.IRModule, target: tvm.target.Target) -> str:
    """In a builder worker: build one candidate and write it where the runner loads it."""
    return default_export(build_candidate(mod, target))


@derived_object
class PooledBuilder(PyBuilder):
    """``LocalBuilder``'s work on one pool of workers that outlives a batch and a run."""

    def __init__(self, *, max_workers: int | None = None, timeout_sec: float = BUILD_TIMEOUT_S,
                 builds_per_worker: int = BUILDS_PER_WORKER) -> None:
        super().__init__()
        self.timeout_sec = timeout_sec
        self.pool = PopenPoolExecutor(max_workers=max_workers or ms.utils.cpu_count(logical=True),
                                      timeout=timeout_sec, maximum_process_uses=builds_per_worker)

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        if any(b.params is not None for b in build_inputs):
            raise ValueError("PooledBuilder builds without bound parameters; a candidate came with some")
        results = []
        jobs = [(b.mod, b.target) for b in build_inputs]
        for r in self.pool.map_with_error_catching(lambda job: build_and_export(*job), jobs):
            if r.status == StatusKind.COMPLETE:
                results.append(BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"PooledBuilder: Timeout, killed after {self.timeout_sec} s"))
            else:
                results.append(BuilderResult(None, f"PooledBuilder: An exception occurred\n{r.value}"))
        return results


@functools.cache
def shared_builder() -> PooledBuilder:
    """The process's builder: its workers are started once and kept."""
    return PooledBuilder()


@functools.cache
def shared_runner() -> ms.runner.LocalRunner:
    """The process's local runner, whose measuring worker is started once and kept."""
    return ms.runner.LocalRunner()


__all__ = ["BUILDS_PER_WORKER", "BUILD_TIMEOUT_S", "PooledBuilder", "build_and_export", "build_candidate",
           "shared_builder", "shared_runner"]
