"""Every legal variant, both layouts, on random awkward shapes and the 24 BERT
shapes, checked against NumPy.

Random shapes (both layouts) use integer-valued data, for which float32 matmul is exact in
any summation order, so the check is equality. The BERT shapes use float data
and the K-scaled error bound of :mod:`matmul.verify`.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from matmul import (
    bert_shapes,
    build_cached,
    compare,
    make_inputs,
    variant_names,
    verify,
)

from .strategies import shapes


@pytest.mark.parametrize("layout", ["NN", "NT"])
@pytest.mark.parametrize("variant", variant_names(legal_only=True, standalone=True))
@given(shape=shapes())
def test_variant_matches_numpy_on_random_shapes(variant, layout, shape):
    kernel = build_cached(variant, shape, "float32", layout)
    a, b = make_inputs(shape, layout=layout, kind="int", seed=shape.M * 7919 + shape.N)
    check = compare(kernel.run(a, b), a, b, layout=layout, kind="int")
    assert check.ok, f"{variant} {shape} {layout}: {check}"


# The 24 BERT shapes in the seed's NN layout. NT is covered by the random
# shapes above and by L5's K=3072 kernel: the seed's whole-axis vectorize(j)
# recipes turn NT's strided B into 768- and 3072-lane gathers that take
# minutes per BERT shape to build and run.
@pytest.mark.parametrize("variant", variant_names(legal_only=True, standalone=True))
@pytest.mark.parametrize("workload", bert_shapes(), ids=lambda w: w.id)
def test_variant_matches_numpy_on_bert_shapes(variant, workload):
    assert verify(build_cached(variant, workload.shape, "float32", "NN"), seed=1).ok
