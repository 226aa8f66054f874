"""Operands live in the suite's operand memory (``core.memory``), aligned at least as TVM's own allocations are.

The NumPy and PyTorch references read the same memory (``tests/test_memory.py``), so a comparison is about
the code, not about where pages fell. What can be checked on any host: the alignment TVM's code may assume,
the values, the shapes, no aliasing of the caller's array, and that a kernel reads such tensors exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from matmul import MatmulShape, build, compare, make_inputs
from matmul.core.runner import TENSOR_ALIGN, host_tensor


@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 13), (1024, 1025)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_a_host_tensor_is_aligned_holds_the_values_and_owns_its_memory(shape, dtype):
    x = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    t = host_tensor(x)
    view = np.from_dlpack(t)
    assert view.ctypes.data % TENSOR_ALIGN == 0
    assert view.shape == x.shape and view.dtype == x.dtype and np.array_equal(view, x)
    assert view.ctypes.data != x.ctypes.data
    x[...] = 0  # the caller's array is not the tensor
    assert np.array_equal(view, np.arange(np.prod(shape), dtype=dtype).reshape(shape))


def test_many_host_tensors_stay_aligned_whatever_numpy_returns():
    """Whatever the size, every tensor starts aligned."""
    offsets = {np.from_dlpack(host_tensor(np.ones(n, np.float32))).ctypes.data % TENSOR_ALIGN for n in range(1, 200)}
    assert offsets == {0}


def test_a_non_contiguous_array_is_copied_contiguous():
    x = np.arange(60, dtype=np.float32).reshape(6, 10)[:, ::2]
    view = np.from_dlpack(host_tensor(x))
    assert view.flags.c_contiguous and np.array_equal(view, x)


@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_a_kernel_reads_and_writes_host_tensors_exactly(layout):
    shape = MatmulShape(5, 70, 90)
    kernel = build("rule_based", shape, layout=layout)
    a, b = make_inputs(shape, layout=layout, kind="int", seed=2)
    ta, tb, tc = kernel.tensors(a, b)
    assert all(np.from_dlpack(t).ctypes.data % TENSOR_ALIGN == 0 for t in (ta, tb, tc))
    assert np.isnan(np.from_dlpack(tc)).all()  # C starts as garbage
    kernel(ta, tb, tc)
    assert compare(np.from_dlpack(tc).copy(), a, b, layout=layout, kind="int").ok
