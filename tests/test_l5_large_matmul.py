"""L5: large kernels verified, 1024^3 and the K=3072 BERT MLP reduction."""

from __future__ import annotations

import pytest

from matmul import MatmulShape, build, kernel_shape, verify


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_1024_cubed(layout):
    kernel = build("full", MatmulShape(1024, 1024, 1024), layout=layout)
    assert verify(kernel, seed=11).ok


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "parallel_vec_j"])
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_k3072_mlp_reduce(variant, layout):
    shape = kernel_shape("mlp_reduce", 384)
    assert shape.K == 3072
    kernel = build(variant, shape, layout=layout)
    assert verify(kernel, seed=5).ok
    assert verify(kernel, seed=6, kind="int").ok
