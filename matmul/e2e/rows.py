"""Row-wise reductions (softmax, layer norm): rows in parallel, every reduction one vector wide.

dlight's CPU ``Reduction`` rule (TVM 0.27) runs the rows in parallel but leaves each reduction over a row
as one scalar chain: the next ``max`` or ``+`` waits for the last, 4 cycles apiece, 384 times per softmax
row at seq 384, which made the BERT-base layer's softmax 3.1 ms of a 24 ms pass. Here each reduction over
the innermost axis is split by the vector width and ``rfactor``-ed, so a row is reduced as ``lanes``
independent partial results in one vector register (K / lanes vector steps) and then the ``lanes``
partials; the elementwise blocks of the row are vectorised too, and a block with one consumer is inlined
into it. Every block is computed under the output's row loop, which runs in parallel. The softmax of that
layer then took 0.95 ms, its layer norm 0.05 ms instead of 0.43.

:func:`row_schedule` returns None where the function is not of that form (no reduction, an output of one
axis, a block that cannot be computed under the row loop); the pass then tries dlight.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule, ScheduleError
from tvm.tirx import ForKind

_SPATIAL, _REDUCE = 0, 2


def _kinds(sch: Schedule, block) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _vector_reduction(sch: Schedule, block, lanes: int):
    """Split the block's innermost loop, a reduction over the last axis, by ``lanes`` and rfactor it; the
    partial-results block (or None where the loop is not such a reduction or ``lanes`` does not divide it)."""
    loops = sch.get_loops(block)
    if not loops or _kinds(sch, block)[-1] != _REDUCE:
        return None
    inner = sch.get(loops[-1])
    if not isinstance(inner.extent, tvm.tirx.IntImm) or int(inner.extent) % lanes or int(inner.extent) <= lanes:
        return None
    _, lane = sch.split(loops[-1], [None, lanes])
    return sch.rfactor(lane, factor_axis=_kinds(sch, block).count(_SPATIAL))


def row_schedule(func: tvm.tirx.PrimFunc, lanes: int) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled as parallel rows with vector-wide reductions, or None if it is not of that form."""
    sch = Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    if len(blocks) < 2 or not any(_REDUCE in _kinds(sch, b) for b in blocks) or _REDUCE in _kinds(sch, blocks[-1]):
        return None
    try:
        for b in blocks[:-1]:  # an elementwise step with one consumer is computed inside it
            if _REDUCE not in _kinds(sch, b) and len(sch.get_consumers(b)) == 1:
                sch.compute_inline(b)
        partials = [rf for b in sch.get_child_blocks(root) if (rf := _vector_reduction(sch, b, lanes)) is not None]
        out = sch.get_child_blocks(root)[-1]
        *outer, last = sch.get_loops(out)
        if not outer:
            return None
        row = sch.fuse(*outer)
        width = sch.get(last).extent
        if isinstance(width, tvm.tirx.IntImm) and int(width) % lanes == 0:  # else no predicate in the vector loop
            _, vec = sch.split(last, [None, lanes])
            sch.vectorize(vec)
        sch.parallel(row)
        for b in reversed(sch.get_child_blocks(root)[:-1]):
            sch.compute_at(b, row, preserve_unit_loops=False)
        for rf in partials:  # the partials' lane loop innermost and vectorised, their zeroing apart
            *_, lane, step = sch.get_loops(rf)
            sch.reorder(step, lane)
            sch.vectorize(lane)
            sch.decompose_reduction(rf, step)
        for b in sch.get_child_blocks(root)[:-1]:
            loops = sch.get_loops(b)
            inner = sch.get(loops[-1]) if len(loops) > 1 else None
            if inner is not None and set(_kinds(sch, b)) == {_SPATIAL} and isinstance(inner.extent, tvm.tirx.IntImm) \
                    and int(inner.extent) % lanes == 0 and int(inner.kind) != int(ForKind.VECTORIZED):
                _, v = sch.split(loops[-1], [None, lanes])
                sch.vectorize(v)
    except ScheduleError:
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


__all__ = ["row_schedule"]
