"""The canonical TIR matmul, built as a pure function of shape, dtype and layout.

The function is produced with ``te.create_prim_func`` from a ``te.compute``
whose only block is named ``"C"`` and whose loops are ``i, j, k`` in that
order. Built this way, the workload round-trips through the MetaSchedule JSON
database (a hand-written TVMScript function with legacy attributes does not,
see ``shared/tvm-0.27-notes.md``), and every schedule in :mod:`matmul.schedules`
can address the block and loops by position.
"""

from __future__ import annotations

import tvm
from tvm import te

from .workloads import MatmulShape

#: Element types of the CPU variants. Accumulation happens in the element type.
DTYPES: tuple[str, ...] = ("float32", "float64")
#: Element types of the GPU variants (:mod:`matmul.core.gpu`). float16 inputs accumulate into, and store, float32,
#: as tensor cores do and as dlight's tensor-core rule expects (``in float16, out float32``).
GPU_DTYPES: tuple[str, ...] = ("float32", "float16")
#: Every element type some variant serves.
ALL_DTYPES: tuple[str, ...] = tuple(dict.fromkeys(DTYPES + GPU_DTYPES))
#: Element types whose products are accumulated (and C stored) in a wider type.
_ACCUMULATOR = {"float16": "float32"}
#: ``NN``: B is K x N (row-major weights). ``NT``: B is N x K (transposed
#: weights, as ``torch.nn.Linear`` stores them and the GPU GEMM seed's nt folder).
LAYOUTS: tuple[str, ...] = ("NN", "NT")
#: Name of the compute block every schedule addresses.
BLOCK = "C"


def check_dtype(dtype: str, allowed: tuple[str, ...] = DTYPES) -> str:
    if dtype not in allowed:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(allowed)}")
    return dtype


def accumulator_dtype(dtype: str) -> str:
    """The type products accumulate in, and C is stored in: ``float32`` for float16, else ``dtype`` itself."""
    return _ACCUMULATOR.get(dtype, dtype)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    return layout


def b_shape(shape: MatmulShape, layout: str) -> tuple[int, int]:
    """Storage shape of operand B for a layout."""
    return (shape.K, shape.N) if check_layout(layout) == "NN" else (shape.N, shape.K)


def matmul_func(shape: MatmulShape, dtype: str = "float32", layout: str = "NN") -> tvm.tirx.PrimFunc:
    """Build the canonical matmul ``PrimFunc``.

    Parameters
    ----------
    shape : MatmulShape
    dtype : {"float32", "float64", "float16"}
        float16 (GPU variants only) multiplies in float32 and stores a float32 C.
    layout : {"NN", "NT"}

    Returns
    -------
    tvm.tirx.PrimFunc
        ``main(A, B, C)`` with one block ``"C"`` over loops ``i, j, k``.
    """
    if not isinstance(shape, MatmulShape):
        raise TypeError(f"shape must be a MatmulShape, got {type(shape).__name__}")
    check_dtype(dtype, ALL_DTYPES)
    acc = accumulator_dtype(dtype)

    def widen(x: te.Tensor) -> te.Tensor:
        return x if acc == dtype else x.astype(acc)

    a = te.placeholder((shape.M, shape.K), dtype, name="A")
    b = te.placeholder(b_shape(shape, layout), dtype, name="B")
    k = te.reduce_axis((0, shape.K), name="k")
    if layout == "NN":
        c = te.compute((shape.M, shape.N), lambda i, j: te.sum(widen(a[i, k]) * widen(b[k, j]), axis=k), name=BLOCK)
    else:
        c = te.compute((shape.M, shape.N), lambda i, j: te.sum(widen(a[i, k]) * widen(b[j, k]), axis=k), name=BLOCK)
    return te.create_prim_func([a, b, c])


def matmul_module(shape: MatmulShape, dtype: str = "float32", layout: str = "NN") -> tvm.IRModule:
    """:func:`matmul_func` wrapped in an ``IRModule`` under the name ``main``."""
    return tvm.IRModule({"main": matmul_func(shape, dtype, layout)})
