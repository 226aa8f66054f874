"""End to end: the Relax encoder layer, the matmul detection, the schedule pass, the profiler and the command."""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import te
from tvm.s_tir import dlight as dl

from matmul import host_facts
from matmul.cli import main
from matmul.core.kernel import matmul_func
from matmul.core.verify import VerificationError
from matmul.core.workloads import MODELS, MatmulShape, ModelConfig
from matmul.e2e import schedule as schedule_mod
from matmul.e2e.detect import find_matmul
from matmul.e2e.layer import (
    export,
    inputs,
    layer_spec,
    lower,
    reference,
    tolerance,
    torch_layer,
    weights,
)
from matmul.e2e.profile import build_layer, check_layer, layer_hot_loops, peak_between_passes, profile_layer
from matmul.e2e.rows import row_schedule
from matmul.e2e.schedule import (
    NONE,
    ROWS,
    check_schedule,
    repeated_work,
    schedule_module,
    schedule_names,
    split_schedule,
)
from matmul.e2e.versus import check_versus, fused_vs_kernels

TINY = ModelConfig("tiny", 64, 160, 4)


def _funcs(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.fixture(scope="module")
def lowered():
    spec = layer_spec(TINY, 12, 2)
    return spec, lower(export(spec)[0])


# --------------------------------------------------------------------------- detection
def test_every_matmul_of_the_layer_is_found_from_its_blocks(lowered):
    spec, mod = lowered
    found = {name: find_matmul(f) for name, f in _funcs(mod).items()}
    mm = {n: m for n, m in found.items() if m is not None}
    t, h, i = spec.tokens, TINY.hidden, TINY.intermediate
    proj = sorted((m.shape.M, m.shape.K, m.shape.N) for m in mm.values() if not m.batch)
    assert proj == sorted([(t, h, h), (t, h, h), (t, h, i), (t, i, h)])  # q/k/v share a function; o; up; down
    assert all(m.layout == "NT" and m.epilogue for m in mm.values() if not m.batch)
    attention = sorted((m.layout, m.shape.M, m.shape.K, m.shape.N, m.batch) for m in mm.values() if m.batch)
    assert attention == [("NN", spec.seq, spec.seq, spec.head_dim, (2, 4)),
                         ("NT", spec.seq, spec.head_dim, spec.seq, (2, 4))]
    others = [n for n, m in found.items() if m is None]
    assert others and all("matmul" not in n for n in others)  # softmax, layer norm, transposes
    assert sum(m.flops() * (3 if m.shape.N == h and m.shape.K == h and len(m.epilogue) == 1 else 1)
               for m in mm.values()) == spec.matmul_flops()


@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_detection_reads_structure_not_names(layout):
    f = matmul_func(MatmulShape(8, 16, 24), layout=layout)
    m = find_matmul(f)
    assert (m.block, m.layout, m.shape, m.batch, m.epilogue) == ("C", layout, MatmulShape(8, 16, 24), (), ())
    a, b = te.placeholder((8, 16), name="x"), te.placeholder((16, 24), name="y")
    k = te.reduce_axis((0, 16))
    c = te.compute((8, 24), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="whatever")
    assert find_matmul(te.create_prim_func([a, b, c])).block == "whatever"
    # A reduction that is not a product (a row sum) and an elementwise function are not matmuls.
    s = te.compute((8,), lambda i: te.sum(a[i, k], axis=k), name="rowsum")
    assert find_matmul(te.create_prim_func([a, s])) is None
    e = te.compute((8, 16), lambda i, j: a[i, j] * 2, name="scale")
    assert find_matmul(te.create_prim_func([a, e])) is None
    # A transposed A (k, i) is no layout the suite schedules: not taken for one.
    at = te.placeholder((16, 8), name="at")
    ct = te.compute((8, 24), lambda i, j: te.sum(at[k, i] * b[k, j], axis=k), name="tn")
    assert find_matmul(te.create_prim_func([at, b, ct])) is None


# --------------------------------------------------------------------------- the pass
def test_the_pass_records_what_every_function_got(lowered):
    _, mod = lowered
    _, plans, _ = schedule_module(mod, "rule_based")
    by_kind = {}
    for p in plans:
        by_kind.setdefault(p.kind, []).append(p)
    assert {p.name for p in plans} == set(_funcs(mod))
    assert all(p.schedule == "rule_based" and p.decisions.get("tm") for p in by_kind["matmul"])
    assert all(p.epilogue == "fused into the write-back" for p in by_kind["matmul"] if p.matmul.epilogue)
    assert {p.schedule for p in by_kind["reduction"]} <= {ROWS, "dlight.cpu.Reduction", "dlight.cpu.GEMV"}
    assert len(by_kind["reduction"]) == 2 and by_kind["injective"]  # softmax + layer norm; the transposes
    _, plans, packed = schedule_module(mod, NONE)
    assert not packed
    assert {p.schedule for p in plans} == {NONE}


def test_a_fused_epilogue_makes_no_pass_of_its_own(lowered):
    _, mod = lowered
    scheduled, plans, _ = schedule_module(mod, "rule_based")
    for p in plans:
        if p.kind == "matmul" and p.matmul.epilogue:
            text = scheduled[p.name].script()
            for block in p.matmul.epilogue:
                assert f'sblock("{block}")' not in text, (p.name, block)


def test_a_dlight_schedule_that_repeats_a_reduction_in_every_parallel_iteration_is_refused(monkeypatch):
    """dlight's Reduction on a one-row layer norm runs the feature loop in parallel and recomputes the row's mean
    and variance under each feature; such a function is left as lowered, with the reason in its plan."""
    one = lower(export(layer_spec(TINY, 1))[0])
    raw = _funcs(one)["layer_norm"]
    with tvm.target.Target("llvm"):
        by_dlight = dl.ApplyDefaultSchedule(dl.cpu.Reduction())(tvm.IRModule({"main": raw}))["main"]
    assert "recomputed in each of the 64 iterations" in repeated_work(by_dlight)
    assert repeated_work(raw) is None  # serial: nothing repeated
    with monkeypatch.context() as m:  # the row schedule, which the pass tries first, set aside
        m.setattr(schedule_mod, "row_schedule", lambda func, lanes: None)
        _, plans, _ = schedule_module(one, "rule_based")
        norm = next(p for p in plans if p.name == "layer_norm")
        assert (norm.kind, norm.schedule) == ("other", "as lowered") and "dlight.cpu.Reduction refused" in \
            norm.decisions["refused"]
        _, plans, _ = schedule_module(lower(export(layer_spec(TINY, 4))[0]), "rule_based")  # rows in parallel
        assert {p.schedule for p in plans if p.name in ("layer_norm", "fast_softmax")} == {"dlight.cpu.Reduction"}
    assert all(repeated_work(f) is None for f in _funcs(schedule_module(one, "rule_based")[0]).values())


def _run_alone(func: tvm.tirx.PrimFunc, seed: int = 0) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=host_facts().target())
    rng = np.random.default_rng(seed)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype(p.dtype)) for p in func.params]
    lib["main"](*args)
    return args[-1].numpy()


@pytest.mark.parametrize("seq, hidden", [(12, 64), (7, 36), (1, 48), (32, 64)])  # 36: no vector width divides it
def test_row_reductions_run_rows_in_parallel_with_vector_wide_partials(seq, hidden):
    mod = lower(export(layer_spec(ModelConfig("r", hidden, 2 * hidden, 4), seq, 2))[0])
    lanes = host_facts().simd_lanes_fp32
    for name in ("fast_softmax", "layer_norm"):
        raw = _funcs(mod)[name]
        new = row_schedule(raw, lanes)
        text = new.script()
        assert "T.parallel(" in text and repeated_work(new) is None
        width = int(raw.params[0].shape[-1])
        if width % lanes == 0 and width > lanes:  # each reduction of a row as lanes partials, one vector
            assert text.count('_rf_update"') == 2  # softmax: max and sum; layer norm: sum and squares
            assert f"T.vectorized(T.int64({lanes}))" in text
        np.testing.assert_allclose(_run_alone(new), _run_alone(raw), rtol=2e-6, atol=2e-6)
    assert row_schedule(matmul_func(MatmulShape(8, 16, 24)), lanes) is None  # one block: not row-wise
    a = te.placeholder((8, 16), name="a")
    assert row_schedule(te.create_prim_func([a, te.compute((8, 16), lambda i, j: a[i, j] * 2)]), lanes) is None
    _, plans, _ = schedule_module(mod, "rule_based")
    assert {p.schedule for p in plans if p.name in ("layer_norm", "fast_softmax")} == {ROWS}


def test_bad_schedules_name_the_choices():
    for bad, phrase in (("nope", "unknown schedule"), ("vec_k", "declared illegal"),
                        ("metaschedule[from=znver3-2c-simd8-t2]", "replays records")):
        with pytest.raises(ValueError, match=phrase) as err:
            check_schedule(bad)
        assert "rule_based" in str(err.value) and NONE in str(err.value)
    assert "rule_based" in schedule_names() and "metaschedule" in schedule_names()  # the layer's own tasks
    assert not any(n.startswith("metaschedule[") for n in schedule_names())


def test_bad_layer_specs_are_refused():
    with pytest.raises(ValueError, match="bert-base"):
        layer_spec("bert-huge", 8)
    for seq in (0, -3, 2.5, "8"):
        with pytest.raises((ValueError, TypeError)):
            layer_spec("bert-base", seq)
    with pytest.raises(ValueError, match="multiple of heads"):
        ModelConfig("odd", 64, 128, 5)


# --------------------------------------------------------------------------- correctness
SCHEDULES = [NONE, "rule_based", "ml_guided", "rule_based[tk=16]", "rule_based@repack", "full", "parallel",
             "baseline"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_is_correct(schedule):
    spec = layer_spec(TINY, 24, 2)
    built = build_layer(spec, schedule)
    assert check_layer(built) <= tolerance(spec)
    assert all(p.schedule == split_schedule(schedule)[0] for p in built.plans if p.kind == "matmul")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.integers(1, 512), hidden=st.sampled_from([32, 48, 64]), heads=st.sampled_from([1, 2, 4]),
       schedule=st.sampled_from(["rule_based", "full"]))
def test_correct_at_any_sequence_length(seq, hidden, heads, schedule):
    spec = layer_spec(ModelConfig("h", hidden, 2 * hidden + 16, heads), seq)
    check_layer(build_layer(spec, schedule))


def test_bert_base_layer_is_correct_at_its_real_size():
    spec = layer_spec("bert-base", 77)
    built = build_layer(spec, "rule_based")
    check_layer(built)
    assert {p.matmul.shape.K for p in built.plans if p.matmul and not p.matmul.batch} == {768, 3072}


def test_a_wrong_output_fails_the_check():
    built = build_layer(layer_spec(TINY, 8), "rule_based")
    good = reference(built.spec, built.x, built.weights)
    check_layer(built, good)
    with pytest.raises(VerificationError, match="exceeds"):
        check_layer(built, good + 10 * tolerance(built.spec))
    with pytest.raises(VerificationError, match="exceeds"):
        check_layer(built, np.where(np.arange(good.size).reshape(good.shape) == 5, np.nan, good))


def test_the_reference_agrees_with_pytorch():
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[torch]'")
    spec = layer_spec(TINY, 16, 2)
    w, x = weights(spec), inputs(spec)
    out = torch_layer(spec, w)(x).numpy()
    assert np.max(np.abs(out - reference(spec, x, w))) <= tolerance(spec)


# --------------------------------------------------------------------------- profiling and the command
def test_the_profile_accounts_for_every_primfunc():
    spec = layer_spec(TINY, 32)
    built = build_layer(spec, "rule_based")
    prof = profile_layer(built, repeat=2, peak_gflops=100.0)
    assert {r.name for r in prof.rows} == {p.name for p in built.plans}
    assert sum(r.share for r in prof.rows) == pytest.approx(1.0)
    assert sum(r.flops for r in prof.rows) == spec.matmul_flops()
    assert max(r.calls for r in prof.rows) == 3  # q, k and v call one function
    assert all(r.gflops and r.pct_peak for r in prof.rows if r.kind == "matmul")
    assert 0 < prof.matmul_share < 1 and prof.forward_s > 0 and len(prof.forward_samples) == 2
    assert prof.peak_gflops == 100.0 and prof.peak_samples == []  # a peak given is used as given
    # each matmul's hot loop, read from the layer's library: the rules' tile, nothing on the stack
    loops = layer_hot_loops(built)
    for r in prof.rows:
        if r.kind == "matmul":
            assert r.loads_per_fma == round(loops[r.name].loads_per_fma, 3) > 0 and r.stack_loads == 0
        else:
            assert r.loads_per_fma is None and r.stack_loads is None


def test_the_profile_reads_percent_of_peak_against_the_probe_timed_between_its_passes():
    built = build_layer(layer_spec(TINY, 32), "rule_based")
    prof = profile_layer(built, repeat=3)
    assert len(prof.peak_samples) == 3 and all(s > 0 for s in prof.peak_samples)
    assert prof.peak_gflops == pytest.approx(statistics.median(prof.peak_samples))
    for r in prof.rows:
        if r.kind == "matmul":
            assert r.pct_peak == pytest.approx(100 * r.gflops / prof.peak_gflops)


@pytest.mark.perf
def test_the_probe_between_passes_reads_the_median_call_as_gflops():
    between, samples = peak_between_passes((lambda: time.sleep(0.001), 1e6), calls=10)
    between()
    between()
    # each call takes at least 1 ms: at most 1e6 flops / 1 ms = 1 GFLOP/s, and well above nothing
    assert len(samples) == 2 and all(0.2 < s <= 1.0 for s in samples)


def test_e2e_command_prints_the_table_and_saves_json(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    assert main(["e2e", "--model", "t5-small", "--seq", "3", "--repeat", "2", "--json", str(out),
                 "--vs-kernels", "2"]) == 0
    text = capsys.readouterr().out
    assert "| primfunc |" in text and "fused into the write-back" in text and "max |error|" in text
    assert "| loads_per_fma | stack_loads |" in text
    assert "| fused_over_kernel |" in text and "of 4 2-D matmul functions within 10%" in text
    doc = json.loads(out.read_text())
    assert doc["model"] == "t5-small" and doc["max_error"] <= tolerance(layer_spec("t5-small", 3))
    assert {r["name"] for r in doc["rows"]} == {p["name"] for p in doc["plans"]}
    assert {r["primfunc"] for r in doc["vs_kernels"]} == {p["name"] for p in doc["plans"] if p["kind"] == "matmul"}


def test_each_layer_function_is_timed_beside_its_kernel_alone():
    spec = layer_spec(TINY, 24)
    rows = fused_vs_kernels(spec, "rule_based", blocks=2, calls=2)
    built = build_layer(spec, "rule_based")
    assert [r.name for r in rows] == [p.name for p in built.plans if p.kind == "matmul"]
    flat = [r for r in rows if not r.matmul.batch]
    assert {(r.matmul.shape.K, r.matmul.shape.N) for r in flat} == {(64, 64), (64, 160), (160, 64)}
    for r in flat:  # timed: the function, its kernel and the function's second build, in the same rounds
        assert not r.skipped and len(r.fused_blocks) == len(r.kernel_blocks) == len(r.twin_blocks) == 2
        assert min(r.fused_blocks + r.kernel_blocks) > 0 and r.slowdown.value > 0 and r.noise.value > 0
        row = r.row()
        assert row["within_10pct"] == (row["fused_over_kernel"] <= 1.10) and row["layout"] == "NT"
    batched = [r for r in rows if r.matmul.batch]
    assert len(batched) == 2 and all("no canonical batched kernel" in r.skipped and r.slowdown is None
                                     for r in batched)


@pytest.mark.parametrize("schedule", [NONE, "metaschedule"])
def test_a_schedule_without_a_kernel_of_its_own_is_refused_before_building(schedule, capsys):
    with pytest.raises(ValueError, match="choose a variant: rule_based"):
        check_versus(schedule)
    assert main(["e2e", "--seq", "2", "--schedule", schedule, "--vs-kernels"]) == 2
    assert "no canonical kernel" in capsys.readouterr().err


@pytest.mark.parametrize("argv, phrase", [
    (["--schedule", "nope"], "unknown schedule"),
    (["--model", "bert-huge"], "bert-base"),
    (["--schedule", "metaschedule[from=znver3-2c-simd8-t2]"], "replays records"),
])
def test_e2e_command_refuses_bad_input(argv, phrase, capsys):
    assert main(["e2e", "--seq", "2", *argv]) == 2
    assert phrase in capsys.readouterr().err


def test_every_model_row_has_heads_that_divide_hidden():
    assert all(m.hidden % m.heads == 0 and m.heads > 1 for m in MODELS.values())
