"""Every legal variant, both layouts, on random awkward shapes and on the BERT
shapes (all 24 for the variants that decide per shape), checked against NumPy.

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
    get_variant,
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


# Which BERT shapes each variant is checked on, in the seed's NN layout. NT is
# covered by the random shapes above and by L5's K=3072 kernel: the seed's
# whole-axis vectorize(j) recipes turn NT's strided B into 768- and 3072-lane
# gathers that take minutes per BERT shape to build and run.
#
# A variant that decides per shape (the rules, the learned model) is checked on
# all 24. A manual recipe applies the same fixed splits to every shape, so a
# shape exercises nothing new unless it changes which loops have tails: M = 16
# (the smallest) and 96 (not a power of two) cover the M sweep for each of the
# three kernels, and the random shapes above cover tails in every axis. The
# larger M would add only run time: the seed's naive recipes take 10-16 s each
# there (the bench grid's gate verifies every case it times at any M).
MANUAL_M = (16, 96)


def _bert_cases() -> list:
    cases = []
    for variant in variant_names(legal_only=True, standalone=True):
        per_shape = get_variant(variant).family != "manual"
        cases += [pytest.param(variant, w, id=f"{w.id}-{variant}") for w in bert_shapes()
                  if per_shape or w.M in MANUAL_M]
    return cases


def test_the_bert_cases_cover_every_variant_and_every_shape_of_the_rules():
    cases = {(p.values[0], p.values[1].id) for p in _bert_cases()}
    names = variant_names(legal_only=True, standalone=True)
    assert {v for v, _ in cases} == set(names)
    assert {w for v, w in cases if v == "rule_based"} == {w.id for w in bert_shapes()}
    for v in names:
        if get_variant(v).family == "manual":
            assert {w.id for w in bert_shapes() if w.M in MANUAL_M} == {w for n, w in cases if n == v}


@pytest.mark.parametrize(("variant", "workload"), _bert_cases())
def test_variant_matches_numpy_on_bert_shapes(variant, workload):
    assert verify(build_cached(variant, workload.shape, "float32", "NN"), seed=1).ok
