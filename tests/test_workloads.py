"""Shapes, models and kernels, and the errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from matmul import (
    KERNELS,
    M_SWEEP,
    MODELS,
    MatmulShape,
    ModelConfig,
    Workload,
    bert_shapes,
    kernel_shape,
    workloads,
)

from .strategies import bad_extents


def test_bert_base_has_the_24_seed_shapes():
    shapes = bert_shapes()
    assert len(shapes) == 24 == len({w.shape for w in shapes})
    assert M_SWEEP == (16, 32, 64, 96, 128, 192, 256, 384)
    assert {(w.shape.K, w.shape.N) for w in shapes} == {(768, 768), (768, 3072), (3072, 768)}
    assert [w.id for w in shapes][:2] == ["qkv-M16", "qkv-M32"]


@pytest.mark.parametrize(
    "kernel, expected", [("qkv", (1024, 1024)), ("mlp_expand", (1024, 4096)), ("mlp_reduce", (4096, 1024))]
)
def test_other_models_are_one_table_row(kernel, expected):
    s = kernel_shape(kernel, 7, "bert-large")
    assert (s.M, s.K, s.N) == (7, *expected)


def test_custom_model_config():
    cfg = ModelConfig("tiny", hidden=64, intermediate=256)
    assert kernel_shape("mlp_reduce", 3, cfg) == MatmulShape(3, 256, 64)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        ModelConfig("broken", hidden=0, intermediate=4)


def test_workload_ids_name_non_default_models():
    assert Workload("qkv", 128).id == "qkv-M128"
    assert Workload("qkv", 128, "llama2-7b").id == "llama2-7b-qkv-M128"
    ids = [w.id for w in workloads(["mlp_expand"], [1, 5], "t5-small")]
    assert ids == ["t5-small-mlp_expand-M1", "t5-small-mlp_expand-M5"]


def test_flops_count_multiply_and_add():
    assert MatmulShape(2, 3, 4).flops == 48


def test_numpy_integers_are_accepted():
    s = MatmulShape(np.int64(5), np.int32(6), np.uint8(7))
    assert (s.M, s.K, s.N) == (5, 6, 7) and all(type(x) is int for x in (s.M, s.K, s.N))


@pytest.mark.parametrize("field", ["M", "K", "N"])
@given(bad=bad_extents)
def test_bad_extents_name_the_field(field, bad):
    dims = {"M": 4, "K": 4, "N": 4, field: bad}
    with pytest.raises(ValueError, match=f"^{field} must be a positive integer"):
        MatmulShape(**dims)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kernel_shape("attention", 16), r"unknown kernel 'attention'; known kernels: mlp_expand, mlp_reduce, qkv"),
        (lambda: kernel_shape("qkv", 16, "gpt5"), r"unknown model 'gpt5'; known models: .*bert-base"),
        (lambda: kernel_shape("qkv", 0), "M must be a positive integer"),
        (lambda: kernel_shape("qkv", 2.0), "M must be a positive integer"),
        (lambda: list(workloads(["qkv"], [16, -1])), "M must be a positive integer"),
        (lambda: list(workloads(["qkv", "xyz"])), "unknown kernel 'xyz'"),
    ],
)
def test_bad_workload_input_is_refused_with_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_tables_are_consistent():
    assert set(KERNELS) == {"qkv", "mlp_expand", "mlp_reduce"}
    assert all(m.intermediate > m.hidden for m in MODELS.values())
