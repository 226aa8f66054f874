"""Which PrimFuncs of a lowered model are matmuls, read from their blocks' iteration structure.

Names say nothing reliable (FuseTIR makes them up, and ``op_pattern`` is dropped), so a function is a
matmul when its first block is the only reduction block and its body is ``C[..] = C[..] + A[..] * B[..]``
with every index a plain block iterator. Each iterator is then classified by the buffers it indexes:

* **K**: the reduction iterator (indexes A and B);
* **batch**: indexes A, B and C (attention's batch and heads);
* **M**: A and C only; **N**: B and C only.

There must be exactly one M, one N and one K; C is indexed ``[batch..., m, n]``, A ``[batch..., m, k]``
and B either ``[batch..., k, n]`` (NN) or ``[batch..., n, k]`` (NT). The blocks after the matmul are
its *epilogue* (bias, GELU, scaling, residual), supported when every one of them is spatial.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.s_tir import Schedule

from ..core.workloads import MatmulShape

#: ``IterVar.iter_type`` of a reduction iterator.
_REDUCE = 2


@dataclass(frozen=True)
class MatmulFunc:
    """What the schedule pass needs to know about one matmul PrimFunc."""

    block: str
    shape: MatmulShape  # one batch slice
    layout: str  # "NN" or "NT"
    batch: tuple[int, ...]
    dtype: str
    #: Blocks after the matmul, in order; empty for a plain matmul.
    epilogue: tuple[str, ...]

    @property
    def slices(self) -> int:
        n = 1
        for b in self.batch:
            n *= b
        return n

    def flops(self) -> int:
        return 2 * self.slices * self.shape.M * self.shape.N * self.shape.K

    def describe(self) -> str:
        batch = "x".join(map(str, self.batch)) + " x " if self.batch else ""
        epi = f" + {len(self.epilogue)}-block epilogue" if self.epilogue else ""
        return f"{batch}{self.shape.M}x{self.shape.K}x{self.shape.N} {self.layout}{epi}"


def _indices(load: tvm.ir.TensorLoad | tvm.tirx.BufferStore) -> list[tvm.tirx.Var] | None:
    idx = list(load.indices)
    return idx if all(isinstance(i, tvm.tirx.Var) for i in idx) else None


def _operands(body: object) -> tuple[object, object, object] | None:
    """``(C store, A load, B load)`` when ``body`` is ``C = C + A * B``, else None."""
    if not isinstance(body, tvm.tirx.BufferStore) or not isinstance(body.value, tvm.tirx.Add):
        return None
    acc, prod = body.value.a, body.value.b
    if not isinstance(prod, tvm.tirx.Mul):
        acc, prod = prod, acc
    if not (isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(body.buffer) and isinstance(prod, tvm.tirx.Mul)):
        return None
    a, b = prod.a, prod.b
    if not (isinstance(a, tvm.ir.TensorLoad) and isinstance(b, tvm.ir.TensorLoad)):
        return None
    return body, a, b


def find_matmul(func: tvm.tirx.PrimFunc) -> MatmulFunc | None:
    """The matmul in ``func`` (see the module's rules), or None when ``func`` is not one."""
    sch = Schedule(tvm.IRModule({"main": func}))
    try:
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except (RuntimeError, ValueError):  # TVM raises RuntimeError subclasses
        return None
    reducing = [n for n, b in enumerate(blocks) if any(iv.iter_type == _REDUCE for iv in b.iter_vars)]
    if reducing != [0] or len(blocks[0].iter_vars) < 3:
        return None
    first = blocks[0]
    ops = _operands(first.body)
    if ops is None:
        return None
    c_idx, a_idx, b_idx = (_indices(x) for x in ops)
    if c_idx is None or a_idx is None or b_idx is None:
        return None
    ivs = list(first.iter_vars)
    kinds: dict[str, list[int]] = {"batch": [], "M": [], "N": [], "K": []}
    for n, iv in enumerate(ivs):
        in_a, in_b, in_c = (any(v.same_as(iv.var) for v in idx) for idx in (a_idx, b_idx, c_idx))
        reduce = iv.iter_type == _REDUCE
        kind = {(True, True, False, True): "K", (True, True, True, False): "batch",
                (True, False, True, False): "M", (False, True, True, False): "N"}.get((in_a, in_b, in_c, reduce))
        if kind is None:
            return None
        kinds[kind].append(n)
    if any(len(kinds[k]) != 1 for k in "MNK") or ivs[-1].iter_type != _REDUCE:
        return None
    var = {k: [ivs[n].var for n in kinds[k]] for k in kinds}
    m, n_, k = var["M"][0], var["N"][0], var["K"][0]
    batch = var["batch"]
    if kinds["batch"] + kinds["M"] + kinds["N"] + kinds["K"] != list(range(len(ivs))):
        return None  # loops not in batch..., m, n, k order

    def same(idx: list, want: list) -> bool:
        return len(idx) == len(want) and all(a.same_as(b) for a, b in zip(idx, want))

    if not (same(c_idx, [*batch, m, n_]) and same(a_idx, [*batch, m, k])):
        return None
    layout = "NN" if same(b_idx, [*batch, k, n_]) else "NT" if same(b_idx, [*batch, n_, k]) else None
    if layout is None:
        return None
    extent = {k_: [int(ivs[n].dom.extent) for n in kinds[k_]] for k_ in kinds}
    if any(not isinstance(b.body, tvm.tirx.BufferStore) or any(iv.iter_type == _REDUCE for iv in b.iter_vars)
           for b in blocks[1:]):
        return None
    return MatmulFunc(
        block=first.name_hint,
        shape=MatmulShape(extent["M"][0], extent["K"][0], extent["N"][0]),
        layout=layout,
        batch=tuple(extent["batch"]),
        dtype=str(ops[0].buffer.dtype),
        epilogue=tuple(b.name_hint for b in blocks[1:]),
    )


__all__ = ["MatmulFunc", "find_matmul"]
