"""The CUDA family: GPU variants of the same canonical kernel, built for a :class:`~matmul.core.gpu.GpuSpec`.

They register with ``target="cuda"``, so CPU callers (``variant_names()``) never see them; ask for them with
``variant_names(target="cuda")``. Each declares the dtypes (float32, and float16 with float32 accumulation) and
layouts (NN, NT) it serves. They build and show their CUDA source and PTX on any machine; they run only where
:func:`~matmul.core.gpu.gpu_present` is true.
"""

from __future__ import annotations

from typing import Any

from ...core.gpu import GpuSpec
from ...core.hardware import HostFacts
from ...core.kernel import GPU_DTYPES
from ...core.registry import Variant, register, register_parametric
from . import dlight, tiled


def _tiled_variant(overrides: dict[str, Any]) -> Variant:
    pins = tiled.check_overrides(overrides)
    name = "gpu_tiled" + (f"[{','.join(f'{k}={v}' for k, v in pins.items())}]" if pins else "")

    def summary(_facts: HostFacts) -> str:
        return ("shared-memory tiles from the GPU spec, threads interleaved over the tile, a 3-stage cp.async "
                "pipeline, register accumulators" + (f"; pinned {pins}" if pins else ""))

    return Variant(
        name=name, family="gpu", target="cuda", dtypes=GPU_DTYPES,
        apply=lambda sch, ctx: tiled.apply(sch, ctx, pins),
        decisions=lambda ctx: tiled.decisions(ctx, pins),
        summary=summary,
    )


register(Variant(
    name="dlight_gpu", family="gpu", target="cuda", dtypes=GPU_DTYPES,
    apply=dlight.apply, decisions=dlight.decisions,
    summary=lambda _facts: "TVM dlight's GPU matmul rule: WMMA tensor cores for float16 (M, N, K > 64), else shared-memory tiles",
))
register_parametric("gpu_tiled", _tiled_variant)

__all__ = ["GpuSpec", "dlight", "tiled"]
