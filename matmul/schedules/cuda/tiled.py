"""``gpu_tiled``: a hand-written CUDA schedule with shared-memory tiles and an asynchronous-copy pipeline.

The structure follows the GPU GEMM research the suite grew from (seed 002): each thread block computes a
``bm x bn`` tile of C, walking K in steps of ``bk``; the A and B tiles of a step are copied from global to
shared memory by all threads together, 16 bytes a copy, with ``cp.async``, ``stages`` steps ahead of the
compute (a software pipeline, so the copy of step k+2 overlaps the FMAs of step k); each thread accumulates a
``tm x tn`` sub-tile in registers and writes it back once. Threads are interleaved over the tile (thread t owns
rows ``t, t + ty, ...``), so neighbouring threads read neighbouring shared-memory words and write neighbouring
global addresses (coalesced).

The tiles come from the GPU spec and the shape, as a rule, not a table:

* ``bm``, ``bn``: powers of two up to 128 that divide M (N), the pair that best trades reuse against keeping
  every streaming multiprocessor busy (a 128-row, 3072-column output gets 64x64, not 128x128, on 108 SMs);
* ``bk``: 16 (float32) or 32 (float16), so one K step of a tile row is 64 bytes; ``stages``: 3, or fewer where
  ``stages x (bm + bn) x bk`` elements exceed the static shared-memory limit;
* threads: up to 16 rows by 256/rows columns; ``tm``, ``tn`` what is left of the tile per thread;
* copies: per operand, the widest of 16, 8, 4 bytes (or one element) dividing its tile rows; ``cp.async`` when
  both are at least 8 bytes.

Every knob can be pinned, ``gpu_tiled[bm=64,bn=128,bk=16,tm=4,tn=8,stages=2]``; a pinned tile that does not
divide the shape, needs too many threads or too much shared memory is refused with the reason. float16 runs on
CUDA cores here (converted to float32 before the FMA); ``dlight_gpu`` is the tensor-core variant.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from tvm.s_tir import Schedule

from ...core.gpu import STATIC_SHARED_BYTES, GpuSpec
from ...core.registry import ScheduleContext, VariantNameError
from ...core.workloads import MatmulShape

KNOBS: tuple[str, ...] = ("bm", "bn", "bk", "tm", "tn", "stages")
MAX_TILE = 128
MAX_THREADS = 256
MAX_STAGES = 3
COPY_BYTES = 16
#: The narrowest copy made asynchronous (``cp.async`` moves 4, 8 or 16 bytes; TVM lowers only vector copies of 8
#: or 16 bytes to it, and leaves a narrower one as a call no code generator knows).
ASYNC_MIN_BYTES = 8


class TiledKnobError(VariantNameError):
    """A pinned ``gpu_tiled`` knob is unknown or not a positive integer."""


def check_overrides(overrides: dict[str, Any]) -> dict[str, int]:
    for key, value in overrides.items():
        if key not in KNOBS:
            raise TiledKnobError(f"unknown gpu_tiled knob {key!r}; knobs: {', '.join(KNOBS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TiledKnobError(f"gpu_tiled knob {key}={value!r} must be a positive integer")
    return dict(overrides)


@dataclasses.dataclass(frozen=True)
class TiledConfig:
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    stages: int
    #: Elements per copy of the A and the B tile.
    vec_a: int
    vec_b: int
    #: Threads per block along rows (``threadIdx.y``) and columns (``threadIdx.x``).
    ty: int
    tx: int
    shared_bytes: int
    blocks: int
    #: Whether the copies are ``cp.async`` (copies of at least ``ASYNC_MIN_BYTES``); else the pipeline's copies are
    #: ordinary loads and stores.
    async_copy: bool

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _pow2_divisor(n: int, cap: int) -> int:
    d = 1
    while d * 2 <= cap and n % (d * 2) == 0:
        d *= 2
    return d


def _tile_choices(dim: int, pinned: int | None) -> list[int]:
    """Powers of two dividing ``dim`` from 32 (or the largest, if smaller) up to ``MAX_TILE``; a pin is the only choice."""
    if pinned:
        return [pinned]
    top = _pow2_divisor(dim, MAX_TILE)
    return [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if min(32, top) <= t <= top]


def _block_tile(shape: MatmulShape, gpu: GpuSpec, bm: int | None, bn: int | None) -> tuple[int, int]:
    """The block tile that best trades reuse for a full GPU.

    Each candidate scores ``wave efficiency x reuse``: the share of SM slots busy over the waves the grid needs
    (``blocks / (ceil(blocks / SMs) x SMs)``) times the FMAs per element loaded into shared memory,
    ``bm x bn / (bm + bn)``. A 128x128 tile reuses each element twice as much as a 64x64 one, but on a
    128 x 3072 output it keeps 24 of 108 SMs busy, and 64x64 wins.
    """
    def score(tile: tuple[int, int]) -> float:
        blocks = -(-shape.M // tile[0]) * -(-shape.N // tile[1])
        waves = -(-blocks // max(gpu.sm_count, 1))
        return blocks / (waves * max(gpu.sm_count, 1)) * tile[0] * tile[1] / (tile[0] + tile[1])

    tiles = [(m, n) for m in _tile_choices(shape.M, bm) for n in _tile_choices(shape.N, bn)]
    return max(tiles, key=lambda t: (score(t), t[0] * t[1]))


def decide(shape: MatmulShape, dtype: str, layout: str, gpu: GpuSpec, overrides: dict[str, int] | None = None) -> TiledConfig:
    """The tile configuration for one shape on one GPU (pinned knobs win; the rest follow the rules above).

    Raises
    ------
    ValueError
        A pinned tile does not divide the shape, or the configuration needs more threads or shared memory than
        a block has (the message names the knob and the limit).
    """
    pin = check_overrides(overrides or {})
    elem = np.dtype(dtype).itemsize
    limit = min(gpu.max_shared_memory_per_block, STATIC_SHARED_BYTES)
    bm, bn = _block_tile(shape, gpu, pin.get("bm"), pin.get("bn"))
    bk = pin.get("bk") or _pow2_divisor(shape.K, 64 // elem)
    for name, tile, dim in (("bm", bm, shape.M), ("bn", bn, shape.N), ("bk", bk, shape.K)):
        if dim % tile:
            raise ValueError(f"gpu_tiled {name}={tile} does not divide {dim} in {shape}; "
                             f"choices: {_divisors(dim)}")
    stages = pin.get("stages") or MAX_STAGES
    if stages < 2:
        raise ValueError(f"gpu_tiled stages={stages}: a pipeline needs at least 2 stages (copy ahead, compute)")
    if "stages" not in pin:
        while stages > 2 and stages * (bm + bn) * bk * elem > limit:
            stages -= 1
    shared = stages * (bm + bn) * bk * elem
    if shared > limit:
        raise ValueError(f"gpu_tiled needs {shared} bytes of shared memory (stages={stages} x (bm+bn)={bm + bn} "
                         f"x bk={bk} x {elem} B), over the {limit}-byte block limit; pin a smaller bk or stages")
    ty = bm // pin["tm"] if "tm" in pin else min(16, bm)
    tx = bn // pin["tn"] if "tn" in pin else min(MAX_THREADS // ty, bn)
    for name, tile, t in (("tm", bm, ty), ("tn", bn, tx)):
        if name in pin and tile % pin[name]:
            raise ValueError(f"gpu_tiled {name}={pin[name]} does not divide its tile ({tile}); "
                             f"choices: {_divisors(tile)}")
        if tile % t:
            raise ValueError(f"gpu_tiled: a tile of {tile} does not split over {t} threads; pin {name}")
    if ty * tx > gpu.max_threads_per_block:
        raise ValueError(f"gpu_tiled needs {ty * tx} threads per block, over the {gpu.max_threads_per_block} limit; "
                         "pin larger tm or tn")
    vec_a, vec_b = _copy_width(bk, elem), _copy_width(bn if layout == "NN" else bk, elem)
    return TiledConfig(bm, bn, bk, bm // ty, bn // tx, stages, vec_a, vec_b, ty, tx, shared,
                       (shape.M // bm) * (shape.N // bn), min(vec_a, vec_b) * elem >= ASYNC_MIN_BYTES)


def _divisors(n: int, most: int = 12) -> str:
    """The divisors of ``n`` a tile could take, largest first, at most ``most`` of them, as text."""
    ds = [d for d in range(n, 0, -1) if n % d == 0][:most]
    return ", ".join(map(str, ds)) + (", ..." if len(ds) == most and ds[-1] > 1 else "")


def _copy_width(contiguous: int, elem: int) -> int:
    """Elements per copy: the widest power of two up to 16 bytes dividing a tile row."""
    vec = 1
    while vec * 2 * elem <= COPY_BYTES and contiguous % (vec * 2) == 0:
        vec *= 2
    return vec


def apply(sch: Schedule, ctx: ScheduleContext, overrides: dict[str, int] | None = None) -> None:
    """Tile, stage A and B through shared memory with a ``stages``-deep async pipeline, accumulate in registers."""
    cfg = decide(ctx.shape, ctx.dtype, ctx.layout, ctx.gpu, overrides)
    block = sch.get_sblock(ctx.block)
    i, j, k = sch.get_loops(block)
    # Thread t of a block owns rows t, t + ty, ...: the register tile's steps are virtual threads (outermost),
    # so its region at the thread level stays one compact element per step and the write-back is coalesced.
    bi, vi, ty = sch.split(i, [None, cfg.tm, cfg.ty])
    bj, vj, tx = sch.split(j, [None, cfg.tn, cfg.tx])
    ko, ki = sch.split(k, [None, cfg.bk])
    sch.reorder(bi, bj, vi, vj, ty, tx, ko, ki)
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(vi, "vthread.y")
    sch.bind(vj, "vthread.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    out = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(out, tx, preserve_unit_loops=True)
    for operand, vec in ((0, cfg.vec_a), (1, cfg.vec_b)):
        tile = sch.cache_read(block, operand, "shared")
        sch.compute_at(tile, ko, preserve_unit_loops=True)
        fused = sch.fuse(*sch.get_loops(tile)[-2:])
        _, cy, cx, lanes = sch.split(fused, [None, cfg.ty, cfg.tx, vec])
        sch.bind(cy, "threadIdx.y")
        sch.bind(cx, "threadIdx.x")
        sch.vectorize(lanes)
    # Blocks under ko: A's copy, B's copy, the compute. Copies run stages-1 steps ahead (asynchronously when wide).
    sch.annotate(ko, "software_pipeline_stage", [0, 0, cfg.stages - 1])
    sch.annotate(ko, "software_pipeline_order", [0, 1, 2])
    if cfg.async_copy:
        sch.annotate(ko, "software_pipeline_async_stages", [0])
    sch.decompose_reduction(block, ko)


def decisions(ctx: ScheduleContext, overrides: dict[str, int] | None = None) -> dict[str, Any]:
    return decide(ctx.shape, ctx.dtype, ctx.layout, ctx.gpu, overrides).as_dict()
