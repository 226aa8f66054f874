"""Weights packed once, when the model is loaded, instead of on every forward pass.

A matmul scheduled by the rules packs B into ``[N / j-pack, K, j-pack]`` panels (R5) on every call. In a
model, B is a weight: constant from one pass to the next, so the copy is the same every time. Here, where
B is a weight, the schedule pass lets the variant read B pre-packed (its buffer takes the panel layout,
:func:`~matmul.schedules.rules.apply_config` with ``prepack_b``), and the model function's weight parameter
takes the packed shape; :func:`pack_args` packs the weights once, outside any timed call, as inference
engines do with their weights (oneDNN's reorders, MKL's packed GEMM, TVM's layout-rewrite of constants).

A weight qualifies only where the model function has inputs and weights apart (``num_input``), the weight
is used by one ``call_tir`` and once in it; anything else (an activation, a weight read twice) keeps the
per-call packing, so the function still computes the same product from what it is given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..schedules.rules import pack_panels
from .detect import MatmulFunc

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


@dataclass(frozen=True)
class Packed:
    """One weight parameter of a model function that the compiled model takes packed."""

    function: str  # the Relax function (``forward``)
    position: int  # its index among that function's parameters
    name: str  # the parameter's name (``up_weight``)
    primfunc: str  # the matmul function that reads it
    jpack: int
    layout: str  # the matmul's layout: "NT" for ``nn.Linear`` weights, stored ``[out, in]``


def _calls(func: relax.Function):
    for block in func.body.blocks:
        for binding in block.bindings:
            yield binding.value


def constant_args(mod: tvm.IRModule) -> dict[str, set[int]]:
    """For each PrimFunc, the argument positions that receive a weight at every call: a parameter of a model
    function past its ``num_input`` inputs, used by that one ``call_tir`` and once in it."""
    seen: dict[str, list[set[int]]] = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        n_in = func.attrs.get("num_input") if func.attrs is not None else None
        weights = set(func.params[int(n_in):]) if n_in is not None else set()
        uses: Counter = Counter()
        for value in _calls(func):
            uses.update(value.args[1].fields if _is_call_tir(value) else relax.analysis.free_vars(value))
        uses.update(relax.analysis.free_vars(func.body.body))
        for value in _calls(func):
            if not _is_call_tir(value):
                continue
            args = value.args[1].fields
            ok = {i for i, a in enumerate(args) if a in weights and uses[a] == 1}
            seen.setdefault(value.args[0].name_hint, []).append(ok)
    return {name: set.intersection(*sets) for name, sets in seen.items()}


def _is_call_tir(value) -> bool:
    return isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR)


def b_position(func: tvm.tirx.PrimFunc, info: MatmulFunc) -> int | None:
    """The parameter position of the buffer the matmul block reads as B, or None if B is not a parameter."""
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    b = sch.get(sch.get_sblock(info.block)).reads[1].source
    return next((i for i, p in enumerate(func.params) if p.same_as(b)), None)  # 0.27: the params are the buffers


def relayout(mod: tvm.IRModule, changed: Mapping[str, tuple[int, int, str]]) -> tuple[tvm.IRModule, list[Packed]]:
    """Give the model functions' weight parameters the packed shapes their PrimFuncs now read.

    ``changed`` maps a PrimFunc's name to (argument position, j-pack, layout) of its pre-packed B; each
    weight passed there becomes a parameter of the PrimFunc's new B shape. Every function gets a new global
    var (a global var keeps the signature it was first typed with). Returns the module and what was
    packed, for :func:`pack_args`.
    """
    if not changed:
        return mod, []
    bb = relax.BlockBuilder()  # its global vars carry the new PrimFuncs' signatures
    renamed = {gv: bb.add_func(func, gv.name_hint) for gv, func in mod.functions.items()
               if isinstance(func, tvm.tirx.PrimFunc)}
    packed: list[Packed] = []
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        swap: dict = dict(renamed)
        for value in _calls(func):
            if not _is_call_tir(value) or value.args[0].name_hint not in changed:
                continue
            callee = value.args[0].name_hint
            pos, jpack, layout = changed[callee]
            w = value.args[1].fields[pos]
            n, k = (w.ty.shape[1], w.ty.shape[0]) if layout == "NN" else (w.ty.shape[0], w.ty.shape[1])
            swap[w] = relax.Var(w.name, relax.TensorType([n // jpack, k, jpack], w.ty.dtype))
            i = next(i for i, p in enumerate(func.params) if p.same_as(w))
            packed.append(Packed(gv.name_hint, i, w.name, callee, jpack, layout))
        body = _Rebind(swap).visit_expr(func.body)
        bb.add_func(relax.Function([swap.get(p, p) for p in func.params], body, func.ret_ty, func.is_pure,
                                   func.attrs), gv.name_hint)
    out = bb.get()
    return (out.with_attrs(mod.attrs) if mod.attrs is not None else out), packed


@relax.expr_functor.mutator
class _Rebind(relax.PyExprMutator):
    """Every use of a swapped parameter refers to its packed replacement."""

    def __init__(self, swap: Mapping) -> None:
        super().__init__()
        self.swap = swap

    def visit_var_(self, var):
        return self.swap.get(var, var)

    def visit_global_var_(self, gv):
        return self.swap.get(gv, gv)


def pack_args(args: Sequence[np.ndarray], packed: Sequence[Packed], function: str = "forward") -> list[np.ndarray]:
    """``function``'s arguments with each packed weight in its panels (done once, when the model is loaded)."""
    out = list(args)
    for p in packed:
        if p.function == function:
            out[p.position] = pack_panels(out[p.position], p.jpack, p.layout)
    return out


__all__ = ["Packed", "b_position", "constant_args", "pack_args", "relayout"]
