"""Vendor references: correct for both layouts, thread-limited, clear when missing."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from matmul import MatmulShape, host_facts, make_inputs
from matmul.core.verify import VerificationError, compare
from matmul.measure.candidates import candidate_names, check_candidate, prepare
from matmul.measure.references import (
    REFERENCES,
    get_reference,
    numpy_alone,
    reference_names,
)


@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_numpy_reference_is_correct(layout):
    shape = MatmulShape(7, 33, 19)
    a, b = make_inputs(shape, layout=layout)
    call, out = get_reference("numpy").prepare(a, b, layout, 1)
    call()
    assert compare(out(), a, b, layout=layout).ok


def test_unknown_reference_lists_choices():
    with pytest.raises(ValueError, match="unknown reference 'mkl'; choose one of: numpy, torch"):
        get_reference("mkl")


def test_missing_torch_is_reported_with_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import fails
    ref = get_reference("torch")
    assert "pip install -e '.[torch]'" in ref.unavailable()
    with pytest.raises(RuntimeError, match="unavailable"):
        ref.prepare(*make_inputs(MatmulShape(2, 2, 2)), "NN", 1)


def test_candidates_cover_variants_and_references():
    names = candidate_names()
    assert "full" in names and "numpy" in names and "vec_k" not in names
    assert check_candidate("numpy") == "reference" and check_candidate("full") == "tvm"
    with pytest.raises(ValueError, match="declared illegal"):
        check_candidate("vec_k")
    with pytest.raises(ValueError, match="choose from: baseline"):
        check_candidate("blas")


def test_prepare_refuses_a_wrong_reference(monkeypatch):
    def wrong(a, b, layout, threads):
        c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
        return (lambda: None), (lambda: c)

    bad = dataclasses.replace(REFERENCES["numpy"], _prepare=wrong)
    monkeypatch.setitem(REFERENCES, "numpy", bad)
    with pytest.raises(VerificationError, match="numpy on"):
        prepare("numpy", MatmulShape(4, 8, 4))


def test_prepared_tvm_candidate_records_decisions():
    cand = prepare("full", MatmulShape(8, 32, 16), layout="NT")
    assert cand.kind == "tvm" and cand.decisions["vector_width"] == host_facts().simd_lanes_fp32
    cand.call()
    assert cand.native_timer()() > 0
    assert len(cand.kernel.time_evaluator(number=1, repeat=2)) == 2
    with pytest.raises(TypeError, match="not a TVM kernel"):
        prepare("numpy", MatmulShape(2, 2, 2)).native_timer()


def test_numpy_alone_runs_in_a_clean_child():
    shapes = [MatmulShape(4, 16, 8), MatmulShape(8, 8, 8)]
    med = numpy_alone(shapes, layout="NT", threads=1, calls=3)
    assert set(med) == set(shapes) and all(v > 0 for v in med.values())
    assert numpy_alone([], threads=1) == {}
    assert reference_names() == ["numpy", "torch"]
