"""Weights packed once: the rule template reading a constant B pre-packed, and the model taking its weights so."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import tvm
from tvm import relax, te
from tvm.s_tir import Schedule

from matmul.cli import main
from matmul.core.hardware import host_facts
from matmul.core.kernel import BLOCK, matmul_module
from matmul.core.registry import relayout_b, variant_decisions
from matmul.core.runner import build, compile_module
from matmul.core.verify import VerificationError, make_inputs, verify
from matmul.core.workloads import MatmulShape, ModelConfig, kernel_shape
from matmul.e2e import versus
from matmul.e2e.layer import export, layer_spec, lower
from matmul.e2e.prepack import constant_args, pack_args
from matmul.e2e.profile import build_layer, check_layer
from matmul.e2e.schedule import REPACK, check_schedule, schedule_module, schedule_names, split_schedule
from matmul.e2e.versus import fused_vs_kernels
from matmul.schedules import rules
from matmul.schedules.rules import (
    HALF_RATE_L2_TK_MIN_ROWS,
    L2_PANEL_SHARE,
    apply_config,
    decide,
    pack_panels,
    prepacks,
)

from .profiles import PROFILES, RUNNABLE, past_in_place

TINY = ModelConfig("tiny", 64, 160, 4)
PROJECTIONS = ("q.weight", "k.weight", "v.weight", "o.weight", "up.weight", "down.weight")


# --------------------------------------------------------------------------- the panels
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_pack_panels_puts_column_j_of_row_k_at_panel_j_over_width(layout):
    k, n, jp = 5, 12, 4
    b = np.arange(k * n, dtype="float32").reshape((k, n) if layout == "NN" else (n, k))
    p = pack_panels(b, jp, layout)
    assert p.shape == (n // jp, k, jp) and p.flags["C_CONTIGUOUS"]
    for kk in range(k):
        for j in range(n):
            assert p[j // jp, kk, j % jp] == (b[kk, j] if layout == "NN" else b[j, kk])
    with pytest.raises(ValueError, match="not a multiple of the panel width 5"):
        pack_panels(b, 5, layout)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_prepacks_needs_packing_one_matrix_and_no_padding_of_b(profile):
    facts = PROFILES[profile]
    lanes = facts.simd_lanes_fp32
    plain = MatmulShape(64, 16 * lanes, 48 * lanes)
    cfg = decide(plain, facts, layout="NT").config  # NT always packs B
    assert cfg.pack_b and prepacks(cfg, plain)
    assert not prepacks(cfg, plain, batched=True)
    assert not prepacks(dataclasses.replace(cfg, pack_b=False), plain)
    ragged = MatmulShape(64, 16 * lanes, 48 * lanes + 1)  # N padded to the tile: B is no longer B re-laid
    assert not prepacks(decide(ragged, facts, layout="NT").config, ragged)


# --------------------------------------------------------------------------- the kernel
def _prepacked_kernel(shape: MatmulShape, layout: str, facts):
    cfg = decide(shape, facts, layout=layout).config
    sch = Schedule(matmul_module(shape, layout=layout), debug_mask="all")
    apply_config(sch, cfg, shape, layout, BLOCK, prepack_b=True)
    return cfg, sch.mod, compile_module(sch, facts.target())


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("layout", ["NN", "NT"])
@pytest.mark.parametrize("m", [24, 37])  # more rows than R5 reads B in place for; 37: R3 pads M, not B
def test_a_prepacked_kernel_reads_b_as_panels_and_computes_the_product(m, layout, target):
    facts = RUNNABLE[target]
    lanes = facts.simd_lanes_fp32
    m = past_in_place(m, facts)
    shape = MatmulShape(m, 8 * lanes, 12 * lanes)
    cfg, mod, exe = _prepacked_kernel(shape, layout, facts)
    assert cfg.pack_b and prepacks(cfg, shape)
    b_param = mod["main"].params[1]
    assert [int(d) for d in b_param.shape] == [shape.N // cfg.jpack, shape.K, cfg.jpack]
    assert "_global" not in mod["main"].script()  # no copy of B inside the function
    rng = np.random.default_rng(m)
    a = rng.standard_normal((shape.M, shape.K)).astype("float32")
    b = rng.standard_normal((shape.K, shape.N) if layout == "NN" else (shape.N, shape.K)).astype("float32")
    c = tvm.runtime.tensor(np.full((shape.M, shape.N), np.nan, "float32"))  # must be overwritten, not added to
    exe.mod["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(pack_panels(b, cfg.jpack, layout)), c)
    want = a.astype("float64") @ (b if layout == "NN" else b.T).astype("float64")
    np.testing.assert_allclose(c.numpy(), want, rtol=1e-4, atol=1e-4 * shape.K ** 0.5)


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_the_prepacked_kernel_variant_takes_b_packed_once_by_the_caller(layout, target):
    """``rule_based_prepacked`` in the kernel grid: B's panels packed by the caller (tensors), no copy inside."""
    facts = RUNNABLE[target]
    rows = past_in_place(40, facts)  # rows that R5 packs B for
    shape = MatmulShape(rows, 8 * facts.simd_lanes_fp32, 12 * facts.simd_lanes_fp32)
    kernel = build("rule_based_prepacked", shape, layout=layout, facts=facts)
    cfg = decide(shape, facts, layout=layout).config
    a, b = make_inputs(shape, layout=layout, seed=3)
    _, tb, _ = kernel.tensors(a, b)
    assert tuple(tb.shape) == (shape.N // cfg.jpack, shape.K, cfg.jpack)
    assert "_global" not in kernel.tir.script()  # B is not copied on every call
    assert verify(kernel, seed=2).ok  # the check packs B as the caller must, then compares with NumPy
    assert variant_decisions("rule_based_prepacked", shape, layout=layout, facts=facts)["b_prepacked"] is True


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_weight_packed_once_gets_tk_from_l2_only_where_the_fmas_issue_at_half_rate(profile):
    """R4 for B packed once: on a half-rate core the panel is sized from L2 (L2_PANEL_SHARE), TK still a
    divisor of K; everything else as for B packed per call, and nothing moves where B is not taken pre-packed
    or the FMAs issue at full rate."""
    facts = PROFILES[profile]
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for M in (32, 128, 384):
            shape = kernel_shape(kernel, M)
            per_call, once = (decide(shape, facts, layout="NT", b_constant=bc).config for bc in (False, True))
            if not (facts.half_rate_fma and prepacks(per_call, shape)) or M >= HALF_RATE_L2_TK_MIN_ROWS:
                assert once == per_call, (kernel, M)  # from HALF_RATE_L2_TK_MIN_ROWS rows B packed per call too
                continue
            budget = facts.l2_bytes * L2_PANEL_SHARE // (once.jpack * 4)
            assert once.tk > per_call.tk and shape.K % once.tk == 0 and once.tk <= budget, (kernel, M, once)
            assert dataclasses.replace(once, tk=per_call.tk) == per_call and prepacks(once, shape)
    pinned = decide(kernel_shape("qkv", 128), facts, layout="NT", b_constant=True, overrides={"tk": 64}).config
    assert pinned.tk == 64


def test_where_r5_reads_b_in_place_the_prepacked_variant_is_rule_based():
    facts = PROFILES["avx512"]
    for shape in (MatmulShape(16, 768, 768), MatmulShape(1, 768, 3072)):  # R5's few rows; R12's GEMV
        b = np.ones((shape.K, shape.N), "float32")
        assert relayout_b("rule_based_prepacked", shape, b, facts=facts) is b
        prepacked = variant_decisions("rule_based_prepacked", shape, facts=facts)
        assert prepacked.pop("b_prepacked") is False
        assert prepacked == variant_decisions("rule_based", shape, facts=facts)
    b = np.ones((768, 768), "float32")  # a variant that takes B as it is: B itself
    assert relayout_b("rule_based", MatmulShape(64, 768, 768), b, facts=facts) is b


def test_the_layer_pass_refuses_the_prepacked_kernel_variant():
    assert "rule_based_prepacked" not in schedule_names()
    with pytest.raises(ValueError, match="takes B pre-packed; in a model the pass packs the weights once"):
        check_schedule("rule_based_prepacked")


def test_where_the_config_does_not_prepack_the_flag_changes_nothing():
    facts = PROFILES["avx512"]
    shape = MatmulShape(16, 256, 16 * 24 + 1)  # N padded: B keeps its own layout and is packed per call
    cfg = decide(shape, facts, layout="NT").config
    sch = Schedule(matmul_module(shape, layout="NT"))
    apply_config(sch, cfg, shape, "NT", BLOCK, prepack_b=True)
    ref = Schedule(matmul_module(shape, layout="NT"))
    apply_config(ref, cfg, shape, "NT", BLOCK)
    tvm.ir.assert_structural_equal(sch.mod, ref.mod)


# --------------------------------------------------------------------------- which arguments are weights
def _nt(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    k = te.reduce_axis((0, a.shape[1]))
    return te.compute((a.shape[0], b.shape[0]), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="NT_matmul")


def _module(twice: bool, num_input: int | None = 1) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([8, 16], "float32"))
    w = relax.Var("w", relax.TensorType([24, 16], "float32"))
    v = relax.Var("v", relax.TensorType([16, 24], "float32"))
    with bb.function("forward", [x, w, v], attrs=None if num_input is None else {"num_input": num_input}):
        with bb.dataflow():
            y = bb.emit_te(_nt, x, w)
            z = bb.emit_te(_nt, y, v)
            out = bb.emit_output(bb.emit_te(_nt, y, w) if twice else z)
        bb.emit_func_output(out)
    return bb.get()


def test_a_weight_is_an_argument_past_num_input_used_once():
    args = constant_args(_module(twice=False))
    assert sorted(args.values(), key=len) == [{1}, {1}]  # w in the first call, v in the second; never x or y
    assert constant_args(_module(twice=True)) == {"_nt": set(), "_nt1": {1}, "_nt2": set()}  # w read twice: not taken
    assert all(not s for s in constant_args(_module(twice=False, num_input=None)).values())  # inputs unknown
    assert all(not s for s in constant_args(_module(twice=False, num_input=3)).values())  # every param an input


def test_the_layers_constant_arguments_are_its_parameters_past_the_input():
    mod = lower(export(layer_spec(TINY, 12, 2))[0])
    args, forward = constant_args(mod), mod["forward"]
    weights = forward.params[1:]
    for block in forward.body.blocks:
        for binding in block.bindings:
            callee, fields = binding.value.args[0].name_hint, binding.value.args[1].fields
            assert args[callee] == {i for i, a in enumerate(fields) if any(a.same_as(w) for w in weights)}
            if callee.startswith("fused_NT_matmul") and len(fields[0].ty.shape) == 2:  # a projection: B is a weight
                assert 1 in args[callee]


# --------------------------------------------------------------------------- the layer
#: TINY's projection weights as (K, N) of their NT matmuls.
PROJECTION_KN = {**dict.fromkeys(("q.weight", "k.weight", "v.weight", "o.weight"), (TINY.hidden, TINY.hidden)),
                 "up.weight": (TINY.hidden, TINY.intermediate), "down.weight": (TINY.intermediate, TINY.hidden)}


@pytest.mark.parametrize("schedule", ["rule_based", "ml_guided", "rule_based[tk=16]"])
def test_the_layer_takes_its_projection_weights_packed_and_stays_correct(schedule):
    spec = layer_spec(TINY, 24, 2)
    built = build_layer(spec, schedule)
    check_layer(built)
    if schedule != "ml_guided":  # the weights the rules (with the pinned knobs) read as packed panels on this host
        pins = (rules.parse_overrides(schedule) or ("", {}))[1]
        shapes = {n: MatmulShape(spec.seq * spec.batch, k, n_) for n, (k, n_) in PROJECTION_KN.items()}
        want = sorted(n for n, s in shapes.items() if prepacks(decide(s, host_facts(), layout="NT",
                                                                      overrides=pins).config, s))
        assert {"q.weight", "k.weight", "v.weight", "o.weight"} <= set(want)  # K = hidden = 64: whole on any L1
        assert sorted(p.name for p in built.packed) == want
    assert sorted(n for plan in built.plans for n in plan.prepacked) == sorted(p.name for p in built.packed)
    assert {p.name for p in built.packed} <= set(PROJECTIONS)
    forward = built.scheduled["forward"]
    for p in built.packed:
        shape = [int(d) for d in forward.params[p.position].ty.shape]
        assert list(built.args[p.position].shape) == shape and len(shape) == 3 and shape[2] == p.jpack
        assert p.layout == "NT"
    for plan in built.plans:
        if plan.prepacked:
            text = built.scheduled[plan.name].script()
            assert not re.search(r'sblock\("[^"]*weight_global"\)', text), plan.name  # no copy per call
            assert plan.decisions["b_prepacked"] is True


def test_repack_packs_on_every_call_and_agrees_with_the_prepacked_layer():
    spec = layer_spec(TINY, 24, 2)
    once, every = build_layer(spec, "rule_based"), build_layer(spec, "rule_based" + REPACK)
    assert not every.packed and not any(plan.prepacked for plan in every.plans)
    plain = [every.x] + [every.weights[n] for n in export(spec)[1]]
    assert [tuple(a.shape) for a in every.args] == [a.shape for a in plain] == [a.shape for a in pack_args(plain, [])]
    assert [tuple(a.shape) for a in once.args] == [a.shape for a in pack_args(plain, once.packed)] != \
        [a.shape for a in plain]
    text = every.scheduled["fused_NT_matmul_add"].script()
    assert re.search(r'sblock\("q\.weight_global"\)', text)  # the per-call copy is back
    np.testing.assert_allclose(once.run(), every.run(), rtol=1e-5, atol=1e-5)
    assert check_layer(every) <= check_layer(once) * 10 + 1e-6


@pytest.mark.parametrize("bad, phrase", [
    ("none" + REPACK, "never packs the weights"),
    ("metaschedule" + REPACK, "never packs the weights"),
    ("full" + REPACK, "does not pack the weights"),
    ("nope" + REPACK, "unknown schedule"),
])
def test_repack_applies_to_the_rule_template_only(bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        check_schedule(bad)


def test_repack_names_split_and_pass_the_check():
    for name in ("rule_based", "ml_guided", "rule_based[tk=16]"):
        assert check_schedule(name + REPACK) == name + REPACK
        assert split_schedule(name + REPACK) == (name, False) and split_schedule(name) == (name, True)
    mod = lower(export(layer_spec(TINY, 8))[0])
    _, plans, packed = schedule_module(mod, "ml_guided" + REPACK)
    assert not packed and {p.schedule for p in plans if p.kind == "matmul"} == {"ml_guided"}


def test_the_command_refuses_repack_of_a_schedule_without_packing(capsys):
    assert main(["e2e", "--seq", "2", "--schedule", "none" + REPACK]) == 2
    assert "never packs the weights" in capsys.readouterr().err


def test_each_function_beside_its_kernel_says_whether_it_read_its_weight_packed():
    spec = layer_spec(TINY, 16)
    for schedule, repack in (("rule_based", False), ("rule_based" + REPACK, True)):
        rows = [r.row() for r in fused_vs_kernels(spec, schedule, blocks=2, calls=1) if not r.skipped]
        assert len(rows) == 4
        for r in rows:  # packed where the rules pack B whole on this host (K = 160 may pad on a small L1)
            shape = MatmulShape(r["M"], r["K"], r["N"])
            packed = not repack and prepacks(decide(shape, host_facts(), layout="NT").config, shape)
            assert r["b_prepacked"] is packed, r
            # like for like: a function that reads its weight packed stands beside a kernel that reads B packed
            assert r["kernel"] == ("rule_based (B pre-packed)" if packed else "rule_based"), r
        assert repack or any(r["b_prepacked"] for r in rows)


def test_the_prepacked_kernel_beside_a_function_checks_its_product(monkeypatch):
    info = next(p.matmul for p in build_layer(layer_spec(TINY, 16), "rule_based").plans if p.prepacked)
    cand = versus._kernel("rule_based", info, True, host_facts())
    assert cand.decisions["b_prepacked"] is True and cand.shape == info.shape
    assert cand.name == "rule_based (B pre-packed)"
    # panels of the wrong rows: the check after the calls must catch it
    real = rules.pack_panels
    monkeypatch.setattr(rules, "pack_panels", lambda b, jp, layout: real(np.roll(b, 1, axis=0), jp, layout))
    with pytest.raises(VerificationError):
        versus._kernel("rule_based", info, True, host_facts())
    with pytest.raises(ValueError, match="does not read B pre-packed"):
        versus._kernel("rule_based[pack_b=False]", info, True, host_facts())


@pytest.mark.parametrize("variant", ["rule_based", "ml_guided"])
def test_any_template_variant_builds_with_b_packed_once(variant):
    """``b_constant`` is a build option of every template variant, not only of ``rule_based_prepacked``."""
    facts = host_facts()
    shape = MatmulShape(40, 8 * facts.simd_lanes_fp32, 12 * facts.simd_lanes_fp32)
    kernel = build(variant, shape, facts=facts, b_constant=True)
    d = variant_decisions(variant, shape, facts=facts, b_constant=True)
    a, b = make_inputs(shape, seed=5)
    _, tb, _ = kernel.tensors(a, b)
    assert (tuple(tb.shape) == (shape.N // d["jpack"], shape.K, d["jpack"])) is d["b_prepacked"]
    assert verify(kernel, seed=4).ok
    plain = build(variant, shape, facts=facts)
    assert tuple(plain.tensors(a, b)[1].shape) == (shape.K, shape.N)
