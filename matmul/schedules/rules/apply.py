"""Turn any legal :class:`~.config.RuleConfig` into a TIR schedule of the canonical kernel."""

from __future__ import annotations

import math

import numpy as np
import tvm.tirx as tirx
from tvm.error import InternalError
from tvm.s_tir import Schedule, ScheduleError
from tvm.s_tir.schedule import _ffi_api as _schedule_ffi
from tvm.sym import Analyzer
from tvm.tirx.function import IndexMap

from ...core.kernel import BLOCK
from ...core.workloads import MatmulShape
from .config import RuleConfig, RuleError, itemsize, prefetch_blocker
from .constants import LINE_BYTES


def prepacks(config: RuleConfig, shape: MatmulShape, batched: bool = False) -> bool:
    """Whether ``config`` takes a constant B pre-packed (see :func:`apply_config`'s ``prepack_b``): it packs
    B (R5), B is one matrix (no batch) and R3 neither pads B's axes nor leaves N a tail, so B's panels are B
    itself re-laid."""
    _, n, k = config.tiled(shape)  # a tail leaves N's last columns outside the panels
    return config.pack_b and not batched and (n, k) == (shape.N, shape.K)


def pack_panels(b: np.ndarray, jpack: int, layout: str = "NN") -> np.ndarray:
    """B as the panels a pre-packed kernel reads: ``[N / jpack, K, jpack]`` from ``[K, N]`` (NN) or ``[N, K]``
    (NT), the NumPy twin of the layout R5 packs into (a model's weights are packed so once, when loaded)."""
    k, n = b.shape if layout == "NN" else b.shape[::-1]
    if n % jpack:
        raise ValueError(f"N = {n} is not a multiple of the panel width {jpack}")
    panels = b.reshape(k, n // jpack, jpack).transpose(1, 0, 2) if layout == "NN" else \
        b.reshape(n // jpack, jpack, k).transpose(0, 2, 1)
    return np.ascontiguousarray(panels)


def apply_config(sch: Schedule, config: RuleConfig, shape: MatmulShape, layout: str = "NN",
                 block_name: str = BLOCK, *, prepack_b: bool = False, prefetch: bool = False) -> None:
    """Schedule the matmul block ``block_name`` (``C`` in the canonical kernel) with ``config``.

    The block reads A then B and writes C; its loops are ``[batch..., i, j, k]``. ``shape`` is one batch
    slice's. Batch loops stay outermost and join the parallel task loop, so a batched matmul (attention's
    ``heads x (S x d x S)``) spreads its slices and tiles over the threads together.

    ``prepack_b``: B is a constant (a model's weight) whose layout the caller chooses. Where the config
    :func:`prepacks`, B's own buffer takes R5's panel layout, so the function reads B already packed
    (:func:`pack_panels`, done once by the caller) instead of packing it on every call; elsewhere the
    flag changes nothing.

    ``prefetch``: R14, B's next block prefetched in software (the plan's choice, :attr:`Plan.prefetch`).

    Raises
    ------
    RuleError
        The config is illegal (see :meth:`RuleConfig.check`).
    """
    c = config.check()
    block = sch.get_sblock(block_name)
    tail = c.tail(shape)
    nb = len(sch.get_loops(block)) - 3
    stmt = sch.get(block)
    buffers = {"A": stmt.reads[0].source.name, "B": stmt.reads[1].source.name, "C": stmt.writes[0].source.name}
    b_buffer = stmt.reads[1].source
    if prefetch and (why := prefetch_blocker(c, shape, layout, str(b_buffer.dtype), batched=nb > 0)):
        raise RuleError(f"R14 cannot prefetch B here: {why}")
    mp = c.padded(shape)[0]
    m_grown = mp != shape.M
    prepacked = prepack_b and prepacks(c, shape, batched=nb > 0)  # asked of the whole shape, tail included
    if tail:  # R3: whole tiles below; the last columns get loops of their own, B's N not padded
        if m_grown:  # M first, on the whole block (pad_einsum cannot pad one part of a partition)
            sch.pad_einsum(block, [1] * nb + [c.tm, 1, 1])
        block = _split_tail(sch, block, c, shape.N - tail, tail)
        shape = MatmulShape(mp, shape.K, shape.N - tail)
    mp, np_, kp = c.padded(shape)
    if (mp, np_, kp) != (shape.M, shape.N, shape.K):  # R3
        sch.pad_einsum(block, [1] * nb + [c.tm, c.tn, c.tk * c.kparts])
    packed = None
    if prepacked:  # R5 done by the caller, once: B's own layout
        sch.transform_layout(block, ("read", 1), _panels(nb, c.jpack, layout))
    elif c.pack_b:  # R5: panels [N / jpack, K, jpack] of B, copied per call
        packed = sch.cache_read(block, 1, "global")
        jp = c.jpack
        # with a tail the panels' last one is partly past N: never read (the whole tiles stop before it), but
        # the layout needs a value for it; the copy's test for it folds away, its task loop ends before it
        sch.transform_layout(block, ("read", 1), _panels(nb, jp, layout), pad_value=0.0 if tail else None)
    total = None
    if c.kparts > 1:  # R13: ``block`` becomes the partial products C_rf[part, ...], ``total`` sums them
        part, _ = sch.split(sch.get_loops(block)[-1], [c.kparts, None])
        total, block = block, sch.rfactor(part, 0)
    loops = list(sch.get_loops(block))  # [batch..., i, j, k], with the part loop before k after rfactor
    parts = [loops.pop(-2)] if total is not None else []
    *batch, i, j, k = loops
    io, i_mid, ir = sch.split(i, [None, c.tm // c.mr, c.mr])
    jo, j_mid, jr = sch.split(j, [None, c.tn // c.jpack, c.jpack])
    ko, ki = sch.split(k, [None, c.tk])
    if c.order == "jfirst":  # R8
        sch.reorder(*parts, *batch, io, jo, ko, j_mid, i_mid, ki, ir, jr)
    else:
        sch.reorder(*parts, *batch, io, jo, ko, i_mid, j_mid, ki, ir, jr)
    local = sch.cache_write(block, 0, "local")  # R10
    sch.reverse_compute_at(local, jo)
    task = sch.fuse(*parts, *batch, io, jo)
    sch.parallel(task)  # R11
    if packed is not None:
        sch.compute_at(packed, ko)
        ko_stmt = sch.get(ko)
        loops = sch.get_loops(packed)
        depth = next(n for n, loop in enumerate(loops) if sch.get(loop).same_as(ko_stmt))
        copy = loops[depth + 1:]  # (k, j) for NN, (j, k) for NT; unit loops may be gone
        transpose = layout == "NT" and len(copy) == 2
        if transpose and math.gcd(c.vector, c.tk) >= 4:
            _transpose_tiles(sch, copy, math.gcd(c.vector, c.tk))
        elif copy:
            if transpose:  # K too ragged for vector loads along it: vectors along j, each a gather of rows
                sch.reorder(copy[1], copy[0])
            _, lane = sch.split(sch.get_loops(packed)[-1], [None, c.vector])
            sch.vectorize(lane)
    jv_outer, jv = sch.split(jr, [None, c.vector])
    sch.vectorize(jv)
    sch.unroll(jv_outer)
    sch.unroll(ir)
    if c.unroll > 1:
        _, kq = sch.split(ki, [None, c.unroll])
        sch.unroll(kq)
    _, wb = sch.split(sch.get_loops(local)[-1], [None, c.writeback])
    sch.vectorize(wb)
    sch.decompose_reduction(block, ko)
    if total is not None:  # the parts' sum: vectors of C, row tasks in parallel, the parts innermost
        *rows, jt, pt = sch.get_loops(total)
        jo_t, jv_t = sch.split(jt, [None, c.vector])
        sch.reorder(jo_t, pt, jv_t)
        sch.vectorize(jv_t)
        sch.parallel(sch.fuse(*rows, jo_t))
        sch.decompose_reduction(total, pt)
    # pad_einsum copies an operand in (A, B) or out (C) when one of its axes grew.
    grown = {"M": m_grown, "N": np_ != shape.N, "K": kp != shape.K}
    for operand, axes in (("A", "MK"), ("B", "KN"), ("C", "MN")):
        if not any(grown[a] for a in axes):
            continue
        copy = sch.get_sblock(buffers[operand] + "_pad")
        if operand == "C" and not grown["N"] and not tail and total is None and mp - shape.M < c.mr:
            # only rows grew: the write-back stores C's own rows. Not where another block writes the padded C too
            # (R3's tail, from a part of its own; R13's sum, as an init and an update): one block must produce it.
            # Nor where whole row blocks are padding (a pinned TM that does not divide M): TVM cannot prove the
            # write-back still covers the rows it reads (stage_pipeline), so C is copied out
            _inline_or_copy_out(sch, buffers[operand] + "_pad")
        else:
            _parallel_copy(sch, copy)
    if prefetch:  # R14, last: the loops it reads are final
        _prefetch_next_block(sch, c, shape, b_buffer, task, ko, j_mid, i_mid)


def prefetch_sizes(c: RuleConfig, shape: MatmulShape, size: int) -> dict[str, int]:
    """R14's counts for ``c`` on ``shape`` (``size``-byte elements): ``per_line`` elements per cache line,
    ``row_lines`` lines per row of a block (one j-pack wide), ``lines`` per block (TK rows), ``share`` prefetched
    at the head of each of the ``tiles`` row tiles, ``j_packs`` per task, ``blocks`` per task (K blocks x
    j-packs) and ``tasks_n``, the task columns."""
    per_line = LINE_BYTES // size
    row_lines = -(-c.jpack // per_line)
    lines, tiles = c.tk * row_lines, c.tm // c.mr
    return {"per_line": per_line, "row_lines": row_lines, "lines": lines, "tiles": tiles,
            "share": -(-lines // tiles), "j_packs": c.tn // c.jpack,
            "blocks": shape.K // c.tk * (c.tn // c.jpack), "tasks_n": shape.N // c.tn}


def prefetch_index(c: RuleConfig, z: dict[str, int], task, ko, jm, im, p, div, mod) -> tuple:
    """The ``p``-th line row tile ``im`` prefetches in step ``(ko, jm)`` of ``task``: ``(row, col, line, nxt)``
    (B's element at the line's start; the line's number in its block and the block's number in the task), to
    be fetched where ``line < lines`` and ``nxt < blocks``. ``div`` and ``mod`` floor-divide (TIR's, or
    NumPy's for the tests, which check every index in bounds and every line of the next blocks fetched)."""
    line, nxt = im * z["share"] + p, ko * z["j_packs"] + jm + 1
    row = div(nxt, z["j_packs"]) * c.tk + div(line, z["row_lines"])
    col = (mod(task, z["tasks_n"]) * c.tn + mod(nxt, z["j_packs"]) * c.jpack
           + mod(line, z["row_lines"]) * z["per_line"])
    return row, col, line, nxt


def _prefetch_next_block(sch: Schedule, c: RuleConfig, shape: MatmulShape, b, task, ko, j_mid, i_mid) -> None:
    """R14: at the head of each row tile (``i_mid``), prefetch into L1 a share of the lines of the B block the
    next ``(ko, j_mid)`` step reads (TK rows of one j-pack), so the block's first row tile finds them there.
    Each row tile takes an equal share; the last block of a task prefetches nothing (its next task's first
    block is read by the same loop soon after, from L2 at worst)."""
    z = prefetch_sizes(c, shape, itemsize(str(b.dtype)))
    t, k, jm, im = (sch.get(loop).loop_var for loop in (task, ko, j_mid, i_mid))
    p = tirx.Var("pf", im.ty)
    row, col, line, nxt = prefetch_index(c, z, t, k, jm, im, p, tirx.floordiv, tirx.floormod)
    fetch = tirx.Evaluate(tirx.call_intrin("void", "tirx.prefetch", tirx.address_of(tirx.BufferLoad(b, [row, col])),
                                           0, 3, 1))  # read, keep in all levels (L1), data cache
    guarded = tirx.IfThenElse(tirx.all(line < z["lines"], nxt < z["blocks"]), fetch, None)
    loop = tirx.For(p, tirx.const(0, str(im.ty)), tirx.const(z["share"], str(im.ty)), tirx.ForKind.SERIAL, guarded)
    tile = sch.get(i_mid)
    sch.state.replace(sch.get_sref(i_mid), tirx.For(tile.loop_var, tile.min, tile.extent, tile.kind,
                                                     tirx.SeqStmt([loop, tile.body]), tile.thread_binding,
                                                     tile.annotations), {})


def _inline_or_copy_out(sch: Schedule, name: str) -> None:
    """Store C's rows from the write-back (the padded C inlined into it), or copy C out where TVM's own check of
    that step fails. Its check (under ``debug_mask="all"``) fails for some row counts past the last whole row
    block: M = 64 in tasks of 6 rows, 22 in tasks of 12 or 4 (left over rows 4, 10, 2: none odd), while the
    code built without the check is right. So the step is tried on a copy of the schedule first."""
    trial = sch.copy()
    try:
        trial.reverse_compute_inline(trial.get_sblock(name))
    except (ScheduleError, InternalError):
        _parallel_copy(sch, sch.get_sblock(name))
    else:
        sch.reverse_compute_inline(sch.get_sblock(name))


def _split_tail(sch: Schedule, block, c: RuleConfig, whole: int, tail: int):
    """Partition the block's j loop into the ``whole`` columns of whole tiles (returned: that part's block, its
    loops back in ``[batch..., i, j, k]`` order) and the ``tail`` columns after them, in parts of power-of-two
    widths (each scheduled here, by :func:`_tail_part`). j goes outermost first, so each part holds all its loops."""
    *batch, i, j, _ = sch.get_loops(block)
    stmt = sch.get(block)
    regions = [("read", n, r) for n, r in enumerate(stmt.reads)] + [("write", n, r) for n, r in enumerate(stmt.writes)]
    old_vars = [iv.var for iv in stmt.iter_vars]
    sch.reorder(j, *batch, i)
    # The tail in power-of-two widths, widest first: a part that starts past 0 cannot be split, and LLVM turns a
    # vector of 40 floats into element inserts and stack spills (8 x 1280 x 1000 read 3x slower than N = 960).
    widths = [1 << b for b in reversed(range(tail.bit_length())) if tail >> b & 1]
    loops = sch.loop_partition(j, [whole, *widths[:-1], None])  # None: the rest
    parts = [sch.get_child_blocks(loop)[0] for loop in loops]
    for part in parts:  # the partition widens each part's regions to whole ranges; the cache steps need points
        for kind, n, region in regions:
            _annotate_point(sch, part, n, kind, old_vars, region)
    for part in parts[1:]:
        _tail_part(sch, part, c.mr, c.kparts)
    body = parts[0]
    j0, *batch, i, _ = sch.get_loops(body)
    sch.reorder(*batch, i, j0)
    return body


def _annotate_point(sch: Schedule, block, n: int, kind: str, old_vars: list, region) -> None:
    """Give ``block``'s ``n``-th read or write ``region`` (of the block before the partition) back, in the
    block's own iter vars. ``Schedule.annotate_buffer_access`` would too, but 0.27's Python wrapper wants
    one range per iter var, where a buffer has one per axis (A has 2 axes, the block 3 iter vars)."""
    new_vars = [iv.var for iv in sch.get(block).iter_vars]
    ana = Analyzer()
    for old, new in zip(old_vars, new_vars):
        ana.bind(old, new)
    bounds = [ana.simplify(e) for r in region.region for e in (r.min, r.min + r.extent)]
    index_map = IndexMap(initial_indices=new_vars, final_indices=bounds, inverse_index_map=None)
    _schedule_ffi.ScheduleAnnotateBufferAccess(sch, block, n, 0 if kind == "read" else 1, index_map)


def _tail_part(sch: Schedule, block, mr: int, kparts: int) -> None:
    """Some of the columns past the last whole j-pack, a power of two of them: one vectorized loop (LLVM makes
    whole vectors of it, or one narrower), ``mr`` rows of accumulators in registers. K is
    split as the whole tiles split it, so each thread reads the ends of the rows of B it has just streamed,
    from its own L2 (read by one thread after the parallel part, the 1024 row ends at M = 1, K = 1024,
    N = 1000 took 15-20 us, about as long as the 960 columns before them)."""
    *_, k = sch.get_loops(block)
    total = None
    if kparts > 1:
        part, _ = sch.split(k, [kparts, None])
        total, block = block, sch.rfactor(part, 0)
    loops = list(sch.get_loops(block))
    parts = [loops.pop(-2)] if total is not None else []
    jt, *batch, i, k = loops
    local = sch.cache_write(block, 0, "local")
    io, ir = sch.split(i, [None, mr])
    sch.reorder(*parts, *batch, io, k, ir, jt)
    outer = sch.fuse(*parts, *batch, io)
    sch.reverse_compute_at(local, outer)
    if sch.get(outer).extent.value > 1:
        sch.parallel(outer)
    sch.unroll(ir)
    width = int(sch.get(jt).extent)
    if width > 1:  # a part one column wide has no vector; its unit loops are gone from the write-back
        sch.vectorize(jt)
        *_, wj = sch.get_loops(local)
        if int(sch.get(wj).extent) != width:
            raise RuntimeError(f"the tail's write-back ends in a loop of {sch.get(wj).extent}, not its {width} columns")
        sch.vectorize(wj)
    sch.decompose_reduction(block, k)
    if total is not None:
        *loops, pt = sch.get_loops(total)
        if width > 1:
            jt, *rows = loops
            sch.reorder(*rows, pt, jt)
            sch.vectorize(jt)
        sch.decompose_reduction(total, pt)


def _parallel_copy(sch: Schedule, block) -> None:
    """A pad copy's loops are ``[batch..., row, col]``: the batch loops and the rows run in parallel, fused
    (parallelising the first loop alone ran attention's copies on one thread: its leading batch is 1)."""
    loops = sch.get_loops(block)
    sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])


def _transpose_tiles(sch: Schedule, copy: list, lanes: int) -> None:
    """NT packing as a transpose of ``lanes x lanes`` tiles (``lanes`` divides TK): ``lanes`` contiguous
    vector loads along a row of B (K-major), each element stored to its panel row. Vectorizing along j
    instead makes every vector a gather of rows K apart, 3-7x slower per element (``evidence/README.md``)."""
    j, k = copy
    jo, ji = sch.split(j, [None, lanes])
    ko, ki = sch.split(k, [None, lanes])
    sch.reorder(jo, ko, ji, ki)
    sch.unroll(ji)
    sch.vectorize(ki)


def _panels(nb: int, jp: int, layout: str):
    """Index map of B's packing: ``[batch..., N / jp, K, jp]`` from ``[batch..., K, N]`` (NN) or ``[batch..., N, K]``."""
    def pack(*axes):
        batch, (x, y) = axes[:nb], axes[nb:]
        k, j = (x, y) if layout == "NN" else (y, x)
        return (*batch, j // jp, k, j % jp)
    return pack


__all__ = ["apply_config", "pack_panels", "prefetch_index", "prefetch_sizes", "prepacks"]
