"""MetaSchedule for the layer: its matmul functions tuned as tasks, resumably, and replayed by the pass."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tvm
from tvm import te

from matmul.cli import main
from matmul.core.hardware import host_facts
from matmul.core.kernel import matmul_func
from matmul.core.store import profile_dir
from matmul.core.workloads import ModelConfig
from matmul.e2e.detect import find_matmul
from matmul.e2e.layer import export, layer_spec, lower, tolerance
from matmul.e2e.profile import build_layer, check_layer
from matmul.e2e.schedule import METASCHEDULE, check_schedule, schedule_names
from matmul.e2e.tune import (
    E2E_DIR,
    kernel_reuse,
    layer_tasks,
    task_dir,
    task_of,
    task_records,
    tune_layer,
    tune_tasks,
    tuned_function,
)
from matmul.schedules.metaschedule.database import RECORD_FILE, STAGING, DatabaseError, NoRecordError
from matmul.schedules.metaschedule.tune import SearchSettings

from .conftest import TUNED_SHAPE

pytestmark = pytest.mark.metaschedule

SMALL = ModelConfig("small", 32, 48, 2)
SPEC = layer_spec(SMALL, 6)
SEARCH = SearchSettings(per_iter=2, population=8, seed=1)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tuning root where every task of the small layer has 2 measured trials."""
    root = tmp_path_factory.mktemp("e2e_root")
    lines = []
    outcomes = tune_layer(SPEC, trials=2, root=root, search=SEARCH, emit=lines.append)
    return root, outcomes, lines


def _funcs(mod):
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def _tasks():
    return layer_tasks(lower(export(SPEC)[0]))


def test_every_matmul_function_is_a_task_with_a_stable_key():
    tasks = _tasks()
    funcs = dict(_funcs(lower(export(SPEC)[0])))
    assert sorted(t.name for t in tasks) == sorted(n for n, f in funcs.items() if find_matmul(f) is not None)
    assert len({t.key for t in tasks}) == len(tasks) == 6  # q/k/v share one function; o, up, down; two attention
    relax_funcs = [f for f in lower(export(SPEC)[0]).functions.values() if not isinstance(f, tvm.tirx.PrimFunc)]
    assert relax_funcs and all(find_matmul(f) is None for f in relax_funcs)  # refused, not a crash
    assert [t.key for t in tasks] == [t.key for t in _tasks()]  # the key is the structure's, not the run's
    for t in tasks:
        s = t.info.shape
        assert t.key.startswith(f"{t.info.layout}-float32-")
        assert f"M{s.M}-K{s.K}-N{s.N}-e{len(t.info.epilogue)}" in t.key


def test_metaschedule_is_a_schedule_of_the_pass_and_its_kernel_form_is_not():
    assert check_schedule(METASCHEDULE) == METASCHEDULE and METASCHEDULE in schedule_names()
    with pytest.raises(ValueError, match="e2e --tune"):
        check_schedule("metaschedule[from=znver3-2c-simd8-t2]")


def test_without_records_the_build_names_the_tune_command(tmp_path):
    with pytest.raises(NoRecordError, match=r"e2e --model small --seq 6 --batch 1 --schedule metaschedule --tune"):
        build_layer(SPEC, METASCHEDULE, root=tmp_path)


def test_a_kernel_record_is_reused_only_where_it_replays(tmp_path):
    for t in _tasks():
        r = kernel_reuse(t, root=tmp_path)
        assert r["reused"] is False and r["why"]
        assert (r["kernel"] is None) == bool(t.info.batch)


def test_tuning_measures_every_task_and_the_pass_replays_its_records(tuned):
    root, outcomes, lines = tuned
    assert len(outcomes) == 6 and all(o.trials_before == 0 and o.trials_now == 2 for o in outcomes)
    assert any("tuning 2 trials" in line for line in lines)
    assert not (profile_dir(host_facts(), root) / E2E_DIR / STAGING).exists() or not any(
        (profile_dir(host_facts(), root) / E2E_DIR / STAGING).iterdir())
    built = build_layer(SPEC, METASCHEDULE, root=root)
    assert check_layer(built) <= tolerance(SPEC)
    mm = [p for p in built.plans if p.kind == "matmul"]
    assert len(mm) == 6 and all(p.schedule == METASCHEDULE for p in mm)
    for p in mm:
        d = p.decisions
        assert d["record_source"] == "task" and d["task_trials"] == 2 and d["record_run_us"] > 0
        assert "reused" in d["kernel_record"]
        assert (p.epilogue != "") == bool(p.matmul.epilogue) and not p.epilogue.startswith("kept by")


def test_a_second_run_skips_and_a_bigger_budget_continues(tuned, tmp_path):
    root, _, _ = tuned
    again = tune_layer(SPEC, trials=2, root=root, search=SEARCH, emit=lambda _: None)
    assert all(o.skipped and o.trials_now == 2 for o in again)
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    task = _tasks()[0]
    before = (task_dir(task, root=copy) / RECORD_FILE).read_text().splitlines()
    out = tune_tasks([task], trials=3, root=copy, search=SearchSettings(per_iter=1, population=8, seed=2),
                     emit=lambda _: None)
    assert [(o.key, o.trials_before, o.trials_now) for o in out] == [(task.key, 2, 3)]
    assert (task_dir(task, root=copy) / RECORD_FILE).read_text().splitlines()[:2] == before  # kept, then one more


def test_a_killed_run_keeps_its_complete_lines(tuned, tmp_path):
    root, _, _ = tuned
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    task = _tasks()[0]
    shard = task_dir(task, root=copy)
    staging = shard.parent / STAGING / task.key
    shutil.copytree(shard, staging)  # a run that measured these two lines, then was killed mid-write
    text = (staging / RECORD_FILE).read_text()
    (staging / RECORD_FILE).write_text(text + text.splitlines()[0][:40])
    shutil.rmtree(shard)
    out = {o.key: o for o in tune_layer(SPEC, trials=2, root=copy, search=SEARCH, emit=lambda _: None)}
    assert out[task.key].trials_now == 2 and not out[task.key].skipped  # the two whole lines counted, none re-measured
    assert (shard / RECORD_FILE).read_text() == text
    assert any((copy / host_facts().profile / E2E_DIR / ".damaged").iterdir())


def test_a_corrupt_task_database_is_named_and_left_alone(tuned, tmp_path):
    root, _, _ = tuned
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    task = _tasks()[0]
    path = task_dir(task, root=copy) / RECORD_FILE
    bad = path.read_text().replace("[", "{", 1)
    path.write_text(bad)
    with pytest.raises(DatabaseError, match=str(path.parent.name)):
        task_records(task, root=copy)
    with pytest.raises(DatabaseError):
        tune_tasks([task], trials=3, root=copy, search=SEARCH, emit=lambda _: None)
    assert path.read_text() == bad


def test_the_command_names_the_tune_command_for_an_untuned_layer(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATMUL_TUNING_ROOT", str(tmp_path))
    argv = ["e2e", "--model", "bert-base", "--seq", "6", "--schedule", METASCHEDULE, "--repeat", "2"]
    assert main(argv) == 2
    assert "python -m matmul e2e --model bert-base --seq 6 --batch 1 --schedule metaschedule --tune" in \
        capsys.readouterr().err
    for bad in ("0", "-2", "x"):
        with pytest.raises(SystemExit):
            main([*argv, "--tune", bad])


def _with_bias(block: str) -> tvm.tirx.PrimFunc:
    """TUNED_SHAPE's matmul with a bias add after it, its matmul block named ``block``."""
    m, k_, n = TUNED_SHAPE.M, TUNED_SHAPE.K, TUNED_SHAPE.N
    a, b, bias = te.placeholder((m, k_), name="A"), te.placeholder((k_, n), name="B"), te.placeholder((n,), name="bias")
    k = te.reduce_axis((0, k_), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name=block)
    return te.create_prim_func([a, b, bias, te.compute((m, n), lambda i, j: c[i, j] + bias[j], name="T_add")])


def test_a_kernel_record_serves_only_a_function_it_replays_on(tuned_root):
    plain = matmul_func(TUNED_SHAPE)
    task = task_of("plain", plain, find_matmul(plain))
    r = kernel_reuse(task, root=tuned_root)
    assert r["kernel_tuned"] and r["reused"] and r["kernel_run_us"] > 0
    func, _, d = tuned_function(task, root=tuned_root)  # no task record: the kernel's, since it replays
    assert d["record_source"] == "kernel" and d["task_trials"] is None
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype("float32") for s in ((TUNED_SHAPE.M, TUNED_SHAPE.K),
                                                                (TUNED_SHAPE.K, TUNED_SHAPE.N)))
    c = tvm.runtime.tensor(np.zeros((TUNED_SHAPE.M, TUNED_SHAPE.N), "float32"))
    tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), host_facts().target())["main"](
        tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)
    for block in ("C", "NT_matmul"):  # the same matmul with an epilogue: another workload; the trace fails
        fused = _with_bias(block)
        task = task_of("fused", fused, find_matmul(fused))
        r = kernel_reuse(task, root=tuned_root)
        assert r["kernel_tuned"] and not r["reused"] and "does not replay on the fused function" in r["why"]
        with pytest.raises(NoRecordError, match="does not replay"):
            tuned_function(task, root=tuned_root)
