"""Turn any legal :class:`~.config.RuleConfig` into a TIR schedule of the canonical kernel."""

from __future__ import annotations

from tvm.s_tir import Schedule

from ...core.kernel import BLOCK
from ...core.workloads import MatmulShape
from .config import RuleConfig


def apply_config(sch: Schedule, config: RuleConfig, shape: MatmulShape, layout: str = "NN") -> None:
    """Schedule the canonical kernel's block ``C`` with ``config``.

    Raises
    ------
    RuleError
        The config is illegal (see :meth:`RuleConfig.check`).
    """
    c = config.check()
    mp, np_, kp = c.padded(shape)
    block = sch.get_sblock(BLOCK)
    if (mp, np_, kp) != (shape.M, shape.N, shape.K):  # R3
        sch.pad_einsum(block, [c.tm, c.tn, c.tk])
    packed = None
    if c.pack_b:  # R5: panels [N / jpack, K, jpack] of B
        packed = sch.cache_read(block, 1, "global")
        jp = c.jpack
        if layout == "NN":
            sch.transform_layout(block, ("read", 1), lambda k, j: (j // jp, k, j % jp))
        else:
            sch.transform_layout(block, ("read", 1), lambda j, k: (j // jp, k, j % jp))
    i, j, k = sch.get_loops(block)
    io, i_mid, ir = sch.split(i, [None, c.tm // c.mr, c.mr])
    jo, j_mid, jr = sch.split(j, [None, c.tn // c.jpack, c.jpack])
    ko, ki = sch.split(k, [None, c.tk])
    if c.order == "jfirst":  # R8
        sch.reorder(io, jo, ko, j_mid, i_mid, ki, ir, jr)
    else:
        sch.reorder(io, jo, ko, i_mid, j_mid, ki, ir, jr)
    local = sch.cache_write(block, 0, "local")  # R10
    sch.reverse_compute_at(local, jo)
    task = sch.fuse(io, jo)
    sch.parallel(task)  # R11
    if packed is not None:
        sch.compute_at(packed, ko)
        ko_stmt = sch.get(ko)
        loops = sch.get_loops(packed)
        depth = next(n for n, loop in enumerate(loops) if sch.get(loop).same_as(ko_stmt))
        copy = loops[depth + 1:]  # (k, j) for NN, (j, k) for NT; unit loops may be gone
        if layout == "NT" and len(copy) == 2:
            sch.reorder(copy[1], copy[0])  # write panels row by row: reads stride K, writes contiguous
        if copy:
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
    # pad_einsum copies an operand in (A, B) or out (C) when one of its axes grew.
    grown = {"M": mp != shape.M, "N": np_ != shape.N, "K": kp != shape.K}
    for name, axes in (("A_pad", "MK"), ("B_pad", "KN"), ("C_pad", "MN")):
        if any(grown[a] for a in axes):
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])


__all__ = ["apply_config"]
