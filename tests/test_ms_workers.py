"""The builder and runner workers MetaSchedule runs share in one process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import tirx as tir
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T

from matmul.core.hardware import host_facts
from matmul.core.kernel import matmul_module
from matmul.core.workloads import MatmulShape
from matmul.schedules.metaschedule.tune import tune_module
from matmul.schedules.metaschedule.workers import PooledBuilder, shared_builder, shared_runner

pytestmark = pytest.mark.metaschedule


def _good() -> ms.builder.BuilderInput:
    return ms.builder.BuilderInput(matmul_module(MatmulShape(4, 8, 4), "float32", "NN"), host_facts().target())


def _unbuildable() -> ms.builder.BuilderInput:
    """A function that stores a variable it is never given: TVM refuses to build it."""

    @T.prim_func
    def f(a: T.Buffer((4,), "float32")):
        for i in range(4):
            a[i] = T.float32(1)

    store = f.body.body
    free = tir.BufferStore(store.buffer, tir.Cast("float32", tir.Var("n", "int32")), [0])
    mod = tvm.IRModule({"main": f.with_body(tir.SeqStmt([f.body, free]))})
    return ms.builder.BuilderInput(mod, host_facts().target())


def test_one_worker_builds_batch_after_batch_until_its_quota_then_a_fresh_one_starts():
    builder = PooledBuilder(max_workers=1, builds_per_worker=4)
    try:
        pid = builder.pool.submit(os.getpid).result()  # use 1: the worker starts
        built, failed = builder.build([_good(), _unbuildable()])  # uses 2 and 3
        assert built.error_msg is None and Path(built.artifact_path).is_file()
        assert failed.artifact_path is None and "are not passed in as API arguments" in failed.error_msg
        assert builder.pool.submit(os.getpid).result() == pid  # use 4: the same process, after a failure too
        assert builder.pool.submit(os.getpid).result() != pid  # past the quota: replaced
    finally:
        builder.pool.shutdown()


def test_a_build_past_its_timeout_is_a_failed_candidate_not_an_error():
    builder = PooledBuilder(max_workers=1, timeout_sec=0.01)  # a fresh worker's imports alone take seconds
    try:
        (result,) = builder.build([_good()])
        assert result.artifact_path is None and "Timeout, killed after 0.01 s" in result.error_msg
    finally:
        builder.pool.shutdown()


def test_bound_parameters_are_refused_by_name():
    good = _good()
    with_params = ms.builder.BuilderInput(good.mod, good.target, {"w": tvm.runtime.tensor(np.zeros(2, "float32"))})
    with pytest.raises(ValueError, match="without bound parameters"):
        PooledBuilder(max_workers=1).build([with_params])


def test_every_run_of_the_process_gets_the_same_builder_and_runner(tmp_path, monkeypatch):
    assert shared_builder() is shared_builder() and shared_runner() is shared_runner()
    assert isinstance(shared_runner(), ms.runner.LocalRunner)
    handed = []
    monkeypatch.setattr(ms, "tune_tir", lambda *a, **kw: handed.append((kw["builder"], kw["runner"])))
    for n in (1, 2):
        tune_module(matmul_module(MatmulShape(4, 8, 4), "float32", "NN"), tmp_path / f"db{n}", trials=1)
    assert handed == [(shared_builder(), shared_runner())] * 2
