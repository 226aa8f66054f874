"""Which schedules TVM accepts, in the order the seed found, and which it refuses."""

from __future__ import annotations

import pytest
import tvm
from tvm.s_tir import Schedule, ScheduleError

from matmul import (
    MatmulShape,
    get_variant,
    kernel_shape,
    matmul_module,
    schedule,
    variant_names,
)
from matmul.core.registry import Variant, register
from matmul.schedules.manual import Recipe

SHAPE = MatmulShape(64, 64, 64)
SEED_VARIANTS = [
    "baseline", "k4", "k8", "k16", "k32", "k64", "parallel", "vec_j", "vec_k",
    "parallel_k16", "parallel_vec_j", "vec_j_k16", "full",
]


def _tiled():
    """The rule-based skeleton up to the point where order matters."""
    sch = Schedule(matmul_module(SHAPE), debug_mask="all")
    block = sch.get_sblock("C")
    i, j, k = sch.get_loops(block)
    io, ii = sch.split(i, factors=[None, 16])
    jo, ji = sch.split(j, factors=[None, 32])
    ko, ki = sch.split(k, factors=[None, 8])
    jio, jv = sch.split(ji, factors=[None, 8])
    sch.reorder(io, jo, ko, ii, jio, ki, jv)
    return sch, block, io, jo, ko, jv


def test_decompose_reduction_before_cache_write_fails_at_cache_write():
    sch, block, io, jo, ko, jv = _tiled()
    sch.decompose_reduction(block, ko)
    with pytest.raises(ScheduleError, match="expected to be written by single block, but got 2 blocks"):
        sch.cache_write(block, 0, "global")


def test_decompose_reduction_before_parallel_fails_at_parallel():
    sch, block, io, jo, ko, jv = _tiled()
    cw = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(cw, jo)
    sch.decompose_reduction(block, ko)
    fused = sch.fuse(io, jo)
    with pytest.raises(ScheduleError, match="compact dataflow"):
        sch.parallel(fused)


def test_decompose_reduction_last_is_legal_and_correct():
    import numpy as np

    from matmul import host_facts, make_inputs
    from matmul.core.runner import compile_module

    sch, block, io, jo, ko, jv = _tiled()
    cw = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(cw, jo)
    fused = sch.fuse(io, jo)
    sch.parallel(fused)
    sch.vectorize(jv)
    sch.decompose_reduction(block, ko)
    lib = compile_module(sch, host_facts().target())
    a, b = make_inputs(SHAPE, kind="int")
    dev = tvm.cpu()
    c = tvm.runtime.tensor(np.zeros((64, 64), np.float32), dev)
    lib["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), c)
    np.testing.assert_array_equal(c.numpy(), a @ b)


def test_vec_k_is_declared_illegal_and_raises():
    v = get_variant("vec_k")
    assert not v.legal
    with pytest.raises(ScheduleError, match=v.illegal_because) as info:
        schedule("vec_k", SHAPE)
    assert any("declared illegal" in note for note in info.value.__notes__)


def test_registry_holds_every_seed_variant():
    assert set(SEED_VARIANTS) <= set(variant_names())
    assert variant_names(legal_only=True) == [n for n in variant_names() if n != "vec_k"]


@pytest.mark.parametrize("variant", variant_names(standalone=True))
@pytest.mark.parametrize("shape", [kernel_shape("qkv", 96), MatmulShape(13, 67, 29), MatmulShape(1, 1, 1)], ids=str)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_every_variant_is_legal_or_declared_illegal(variant, shape, layout):
    v = get_variant(variant)
    if v.legal:
        schedule(variant, shape, layout=layout)
    else:
        with pytest.raises(ScheduleError, match=v.illegal_because):
            schedule(variant, shape, layout=layout)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown variant 'fast'; known variants: baseline, k4, .*full"):
        schedule("fast", SHAPE)


def test_registering_a_duplicate_name_fails():
    with pytest.raises(ValueError, match="'full' is already registered"):
        register(Variant("full", "manual", Recipe().apply, Recipe().describe))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vectorize="j1"), "vectorize='j1' names no loop"),
        (dict(j_split=8, parallel="j"), "parallel='j' names no loop"),
        (dict(k_split=8, order=("i", "j", "k")), "must list exactly the loops"),
    ],
)
def test_recipe_refuses_loops_it_does_not_have(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kwargs)
