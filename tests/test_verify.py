"""The checker itself: it passes correct output and catches the errors a bad
schedule makes (a dropped term, a NaN, a one-ulp slip on exact data)."""

from __future__ import annotations

import numpy as np
import pytest

from matmul import MatmulShape, build_cached, compare, make_inputs, reference, verify
from matmul.core.verify import VerificationError, error_bound


@pytest.mark.parametrize("K", [1, 17, 768, 3072])
def test_float32_result_passes_and_a_dropped_term_fails(K):
    shape = MatmulShape(8, K, 8)
    a, b = make_inputs(shape, seed=K)
    c = (a @ b).astype(np.float32)  # float32 BLAS result, any summation order
    assert compare(c, a, b).ok
    # drop the largest term of one dot product: what a bad split tail does
    i, j = 3, 5
    terms = a[i].astype(np.float64) * b[:, j]
    broken = c.copy()
    broken[i, j] -= terms[np.argmax(np.abs(terms))]
    if K > 1:
        assert not compare(broken, a, b).ok


def test_bound_scales_with_k():
    small = error_bound(*make_inputs(MatmulShape(4, 64, 4)), "NN", "float32").mean()
    large = error_bound(*make_inputs(MatmulShape(4, 4096, 4)), "NN", "float32").mean()
    assert large > 30 * small  # grows like K * |A||B|, itself ~K


def test_nan_is_a_mismatch():
    a, b = make_inputs(MatmulShape(4, 4, 4))
    c = reference(a, b).astype(np.float32)
    c[1, 2] = np.nan
    check = compare(c, a, b)
    assert not check.ok and check.worst_index == (1, 2)


def test_integer_data_is_checked_exactly():
    a, b = make_inputs(MatmulShape(6, 50, 6), kind="int")
    c = (a @ b).astype(np.float32)
    assert compare(c, a, b, kind="int").ok
    c[0, 0] = np.nextafter(c[0, 0], np.float32(np.inf))
    assert not compare(c, a, b, kind="int").ok


def test_nt_layout_reference_transposes_b():
    a, b = make_inputs(MatmulShape(3, 5, 4), layout="NT")
    assert b.shape == (4, 5)
    np.testing.assert_allclose(reference(a, b, "NT"), a.astype(float) @ b.T.astype(float))


def test_verify_raises_with_the_worst_element():
    class Out:
        value = None

        def numpy(self):
            return self.value

    class Wrong:  # the kernel protocol verify uses: tensors() and a call on them
        variant, shape, dtype, layout = "wrong", MatmulShape(4, 4, 4), "float32", "NN"

        def tensors(self, a, b):
            return a, b, Out()

        def __call__(self, a, b, c):
            c.value = (a @ b).astype(np.float32)
            c.value[2, 1] += 1.0

    with pytest.raises(VerificationError, match=r"wrong on 4x4x4 .*MISMATCH.*at \(2, 1\)"):
        verify(Wrong())


def test_bad_data_kind():
    with pytest.raises(ValueError, match="unknown data kind 'gauss'; choose one of: float, int"):
        make_inputs(MatmulShape(1, 1, 1), kind="gauss")


def test_kernel_refuses_wrongly_shaped_arrays():
    k = build_cached("full", MatmulShape(4, 6, 8), "float32", "NN")
    a = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"B must be a \(6, 8\) float32 array .*got \(8, 6\)"):
        k.run(a, np.zeros((8, 6), np.float32))
    with pytest.raises(ValueError, match=r"A must be a \(4, 6\) float32 array .*float64"):
        k.run(np.zeros((4, 6)), np.zeros((6, 8), np.float32))


def test_float64_kernels_verify():
    k = build_cached("full", MatmulShape(33, 65, 17), "float64", "NT")
    assert verify(k).ok
