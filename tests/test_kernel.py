"""The canonical kernel builder: pure, addressable, and strict about input."""

from __future__ import annotations

import pytest
import tvm_ffi
from tvm.s_tir import Schedule

from matmul import MatmulShape, matmul_func, matmul_module

SHAPE = MatmulShape(5, 7, 3)


@pytest.mark.parametrize("layout, b_shape", [("NN", (7, 3)), ("NT", (3, 7))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_buffers_follow_shape_layout_and_dtype(layout, b_shape, dtype):
    script = matmul_func(SHAPE, dtype, layout).script()
    signature = f'A: T.Buffer((5, 7), "{dtype}"), B: T.Buffer({b_shape}, "{dtype}"), C: T.Buffer((5, 3), "{dtype}")'
    assert signature in script
    index = "B[v_k, v_j]" if layout == "NN" else "B[v_j, v_k]"
    assert f"C[v_i, v_j] + A[v_i, v_k] * {index}" in script


def test_one_block_named_c_over_i_j_k():
    sch = Schedule(matmul_module(SHAPE))
    loops = sch.get_loops(sch.get_sblock("C"))
    assert [int(sch.get(l).extent) for l in loops] == [5, 3, 7]


def test_builder_is_pure():
    assert tvm_ffi.structural_equal(matmul_module(SHAPE), matmul_module(MatmulShape(5, 7, 3)))
    assert not tvm_ffi.structural_equal(matmul_module(SHAPE), matmul_module(SHAPE, layout="NT"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype="int8"), "unsupported dtype 'int8'; choose one of: float32, float64, float16"),
        (dict(layout="TN"), "unknown layout 'TN'; choose one of: NN, NT"),
    ],
)
def test_bad_dtype_or_layout(kwargs, message):
    with pytest.raises(ValueError, match=message):
        matmul_module(SHAPE, **kwargs)


def test_shape_must_be_a_matmul_shape():
    with pytest.raises(TypeError, match="MatmulShape"):
        matmul_func((5, 7, 3))
