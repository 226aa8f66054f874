"""The rule-based schedule: its decisions, their limits, its errors, its code.

Decisions are pure functions of (shape, facts), so most tests here vary the
facts (SIMD width, registers, caches, threads) and check what the rules must
guarantee on any machine; correctness against NumPy is covered for every
legal variant by the hypothesis and BERT suites, and below for the shapes
the rules treat specially (M=1, padding, other models, float64, NT).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import tvm
from hypothesis import example, given
from tvm import te
from tvm.s_tir import Schedule

from matmul import (
    MatmulShape,
    build,
    build_cached,
    compare,
    kernel_shape,
    make_inputs,
    verify,
)
from matmul.core.registry import ScheduleContext, get_variant, schedule, variant_decisions
from matmul.core.runner import count_vector_fma
from matmul.core.workloads import MODELS, bert_shapes
from matmul.schedules.rules import (
    FMA_CHAINS,
    GEMV_MAX_ROWS,
    GEMV_STREAMS,
    HALF_RATE_L2_TK_MIN_ROWS,
    HALF_RATE_UNPACKED_MAX_ROWS,
    KPART_MIN_K,
    L2_PANEL_SHARE,
    MAX_PANELS_PER_TASK,
    NARROW_MAX_L3_SHARE,
    NARROW_MAX_ROWS,
    NARROW_ROW_BYTES,
    PAD_ROWS_MAX,
    PAGE_BYTES,
    RULES,
    STREAM_MAX_ROWS,
    TASKS_PER_THREAD,
    UNPACKED_MAX_ROWS,
    UNPADDED_MIN_ACC,
    RuleConfig,
    RuleError,
    apply_config,
    decide,
    parse_overrides,
    set_pressure,
    vector_registers,
)

from .batched import run_batched
from .profiles import AVX2, AVX512, BIG, HOST, PROFILES, RUNNABLE
from .strategies import shapes

ZEN3 = AVX2
FACTS = PROFILES
ODD = [MatmulShape(1, 768, 768), MatmulShape(17, 100, 50), MatmulShape(77, 1024, 4096), MatmulShape(1, 1, 1),
       MatmulShape(5, 3072, 13)]


# --------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("shape", [w.shape for w in bert_shapes()] + ODD, ids=str)
def test_plan_respects_registers_caches_and_tiles(facts, shape):
    c = decide(shape, facts).config
    lanes = facts.simd_lanes_fp32
    assert c.vector == lanes
    assert c.jpack % lanes == 0 and c.tn % c.jpack == 0 and c.tm % c.mr == 0
    assert c.mr * (c.jpack // lanes) + c.jpack // lanes + 1 <= vector_registers(facts)
    in_l2 = facts.half_rate_fma and shape.M >= HALF_RATE_L2_TK_MIN_ROWS  # R4's panel within a share of L2 there
    assert c.tk * c.jpack * 4 <= facts.l1d_bytes * 3 // 4 or c.tk <= lanes or in_l2
    assert c.tk * c.jpack * 4 <= facts.l2_bytes * L2_PANEL_SHARE
    assert c.tm * c.tn * 4 <= facts.l2_bytes // 2 or c.tm == c.mr
    mp, np_, kp = c.padded(shape)
    assert shape.M <= mp < shape.M + c.tm and shape.N <= np_ < shape.N + c.tn and shape.K <= kp < shape.K + c.tk


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("M", [1, 2, 3, 7, 16, 17, 32, 64, 96, 128, 192, 256, 384, 512, 1000])
@pytest.mark.parametrize("kernel", ["qkv", "mlp_expand", "mlp_reduce"])
def test_enough_parallel_tasks_at_every_m(facts, M, kernel):
    shape = kernel_shape(kernel, M)
    c = decide(shape, facts).config
    assert c.tasks(shape) >= facts.runtime_threads
    # and at least the 4-per-thread aim whenever the register tiles allow it (R12's GEMV path: one
    # contiguous column range per thread instead)
    mp, np_, _ = c.padded(shape)
    if (mp // c.mr) * (np_ // c.jpack) >= 4 * facts.runtime_threads and M > GEMV_MAX_ROWS:
        assert c.tasks(shape) >= 4 * facts.runtime_threads


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("M", [8, 16, 17, 33, 77, NARROW_MAX_ROWS, NARROW_MAX_ROWS + 1, 200, 384])
@pytest.mark.parametrize(("model", "kernel"), [("bert-base", "qkv"), ("bert-base", "mlp_expand"),
                                               ("bert-large", "mlp_expand"), ("bert-large", "mlp_reduce"),
                                               ("t5-small", "mlp_expand"), ("llama2-7b", "mlp_reduce")])
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_a_task_takes_a_narrow_strip_of_b_where_packing_weighs(facts, M, model, kernel, layout):
    shape = kernel_shape(kernel, M, model)
    plan = decide(shape, facts, layout=layout)
    c, why = plan.config, {d.knob: d.why for d in plan.decisions}["tn"]
    if {d.knob: d.rule for d in plan.decisions}["tn"] == "R12":  # a few rows, B from memory: see test_stream.py
        assert M <= STREAM_MAX_ROWS and layout == "NN" and not c.pack_b and "streams from memory" in why
        return
    assert c.tn % c.jpack == 0 and c.tn <= c.jpack * MAX_PANELS_PER_TASK
    narrow = min(MAX_PANELS_PER_TASK, max(1, NARROW_ROW_BYTES // (c.jpack * 4)))  # j-packs a narrow task takes
    share = NARROW_MAX_L3_SHARE
    in_l3 = shape.K * shape.N * 4 * share.denominator <= (facts.l3_bytes or 0) * share.numerator
    if c.pack_b and M <= NARROW_MAX_ROWS and in_l3:
        assert c.tn // c.jpack <= narrow
        assert (f"at most {NARROW_ROW_BYTES} B of each row of B" in why) == (narrow < MAX_PANELS_PER_TASK)
        # and no narrower than the bound allows, unless the threads need the tasks
        whole = c.padded(shape)[1] if not c.tail(shape) else shape.N - c.tail(shape)
        strip = narrow * c.jpack
        if whole % strip == 0 and whole // strip >= TASKS_PER_THREAD * facts.runtime_threads:
            assert c.tn == narrow * c.jpack
    else:
        assert "of each row of B" not in why


def test_narrow_tasks_follow_packing_and_leave_pinned_knobs_alone():
    shape = kernel_shape("mlp_expand", 64)  # 3072 columns: whole pages, packed at any M
    lanes = AVX512.simd_lanes_fp32
    c = decide(shape, AVX512).config
    assert c.pack_b and c.tn * 4 <= max(NARROW_ROW_BYTES, c.jpack * 4) < c.jpack * 4 * MAX_PANELS_PER_TASK
    unpacked = decide(shape, AVX512, overrides={"pack_b": False}).config  # read in place: no copy to weigh
    assert unpacked.tn == unpacked.jpack * MAX_PANELS_PER_TASK
    assert decide(shape, AVX512, overrides={"tn": 4 * c.jpack}).config.tn == 4 * c.jpack
    wide = decide(kernel_shape("mlp_expand", NARROW_MAX_ROWS + 64), AVX512).config  # enough rows to pay for it
    assert wide.pack_b and wide.tn == wide.jpack * MAX_PANELS_PER_TASK and wide.vector == lanes
    small_l3 = dataclasses.replace(AVX512, l3_bytes=2 * 768 * 3072 * 4 * NARROW_MAX_L3_SHARE.denominator // 3)
    assert decide(shape, small_l3).config.tn == c.jpack * MAX_PANELS_PER_TASK  # B streams from DRAM: long strips


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("M", range(1, GEMV_MAX_ROWS + 2))
@pytest.mark.parametrize(("model", "kernel"), [("bert-base", "qkv"), ("llama2-7b", "mlp_expand"),
                                               ("llama2-7b", "mlp_reduce")])
def test_a_few_rows_take_the_gemv_path(facts, M, model, kernel):
    shape = kernel_shape(kernel, M, model)
    plan = decide(shape, facts)
    c, rules = plan.config, {d.knob: d.rule for d in plan.decisions}
    if M > GEMV_MAX_ROWS:
        assert "R12" not in rules.values()
        return
    assert rules["tk"] == rules["tn"] == rules["tm"] == "R12"
    assert c.tk == min(shape.K, GEMV_STREAMS) and not c.pack_b and c.tm == c.padded(shape)[0]
    mp, np_, _ = c.padded(shape)
    threads = facts.runtime_threads
    # each thread's columns in one contiguous range where the C tile allows it, or (R12's split) each thread
    # whole rows of B; never fewer tasks than threads
    assert c.tasks(shape) >= min(threads, np_ // c.jpack)
    if rules["kparts"] == "R12":
        assert c.kparts == threads and c.tn == np_ and c.tasks(shape) == threads
    else:
        assert c.tn <= max(c.jpack, np_ // threads) and c.tm * c.tn * 4 <= facts.l2_bytes // 2 or c.tn == c.jpack
    nt = decide(shape, facts, layout="NT")  # NT packs B: the GEMV path would copy all of it per call
    assert "R12" not in {d.rule for d in nt.decisions}


def test_avx2_bert_tile_is_four_rows_by_three_vectors():
    c = decide(kernel_shape("qkv", 128), ZEN3).config
    assert (c.mr, c.jpack, c.tk, c.tn, c.tm) == (4, 24, 256, 96, 128)


def test_the_wider_machine_gets_wider_tiles():
    shape = kernel_shape("qkv", 128)
    c3, c4 = decide(shape, ZEN3).config, decide(shape, AVX512).config
    assert c4.vector == 16 and c4.jpack % 16 == 0
    assert c4.mr * c4.jpack // 16 > c3.mr * c3.jpack // 8  # 32 registers hold more accumulators


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
def test_the_register_tile_pads_m_by_at_most_one_row_in_eight(facts):
    """R2: no decided tile wastes more than PAD_ROWS_MAX of its padded rows, and none that fits as well has more accumulators."""
    lanes, regs = facts.simd_lanes_fp32, vector_registers(facts)

    def fits_n(nv, n):
        return n % (nv * lanes) == 0 or n <= nv * lanes

    def pad_ok(mr, m):
        padded = -(-m // mr) * mr
        return padded - m <= padded * PAD_ROWS_MAX

    def enough(acc):  # accumulators enough for a tile that leaves M unpadded to win over more of them
        return acc > FMA_CHAINS and acc * UNPADDED_MIN_ACC.denominator >= regs * UNPADDED_MIN_ACC.numerator

    for M in [*range(1, 41), 77, 128, 200, 333]:
        for N in (768, 1024, 4096, 50):
            c = decide(MatmulShape(M, 768, N), facts).config
            nv = c.jpack // lanes
            assert pad_ok(c.mr, M), (M, N, c)
            acc = min(c.mr * nv, regs - nv - 1)
            tiles = [(mr, v) for v in range(1, 5) for mr in range(1, min(8, M) + 1)
                     if mr * v + v + 1 <= regs and fits_n(v, N) >= fits_n(nv, N) and pad_ok(mr, M)]
            unpadded = M % c.mr == 0 and enough(acc)
            better = [(mr, v) for mr, v in tiles if min(mr * v, regs - v - 1) > acc and (M % mr == 0 or not unpadded)]
            assert not better, (M, N, c, better)
            if M % c.mr:  # padded rows: no tile as good for N leaves M whole with enough accumulators
                whole = [(mr, v) for mr, v in tiles if M % mr == 0 and enough(min(mr * v, regs - v - 1))]
                assert not whole, (M, N, c, whole)


def test_seven_rows_are_not_padded_to_twelve():
    for facts in (AVX2, AVX512):  # six-row tiles fit both; at M = 7 they would waste 5/12 of the FMAs
        for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
            for model in ("bert-base", "bert-large"):
                c = decide(kernel_shape(kernel, 7, MODELS[model]), facts).config
                assert c.padded(kernel_shape(kernel, 7, MODELS[model]))[0] <= 8, (facts.mcpu, kernel, model, c)


def test_l1_size_sets_tk():
    shape = kernel_shape("mlp_reduce", 64)
    small = decide(shape, dataclasses.replace(ZEN3, l1d_bytes=16 * 1024)).config.tk
    large = decide(shape, dataclasses.replace(ZEN3, l1d_bytes=64 * 1024)).config.tk
    assert small < decide(shape, ZEN3).config.tk < large


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_from_192_rows_on_half_rate_fmas_tk_comes_from_l2(profile):
    """R4 on a core whose widest FMAs issue at half rate: from HALF_RATE_L2_TK_MIN_ROWS rows of one matrix the
    TK x j-pack panel is sized from L2_PANEL_SHARE of L2, TK a divisor of K larger than the L1-sized one;
    every other knob is what the rules choose for that TK. Below the bound, on a full-rate core, for a batch of
    slices and with TK pinned, TK is sized from L1 as before."""
    facts = PROFILES[profile]
    lanes = facts.simd_lanes_fp32
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for M in (HALF_RATE_L2_TK_MIN_ROWS // 2, HALF_RATE_L2_TK_MIN_ROWS - 1, HALF_RATE_L2_TK_MIN_ROWS, 384):
            shape = kernel_shape(kernel, M)
            c = decide(shape, facts).config
            l1_panel = facts.l1d_bytes * 3 // 4
            if not (facts.half_rate_fma and M >= HALF_RATE_L2_TK_MIN_ROWS):
                assert c.tk * c.jpack * 4 <= l1_panel or c.tk <= lanes, (kernel, M, c)
                continue
            assert c.tk * c.jpack * 4 > l1_panel and shape.K % c.tk == 0 and c.tk % lanes == 0, (kernel, M, c)
            assert c.tk * c.jpack * 4 <= facts.l2_bytes * L2_PANEL_SHARE, (kernel, M, c)
            assert c.tk * 2 * c.jpack * 4 > facts.l2_bytes * L2_PANEL_SHARE or c.tk * 2 > shape.K  # the largest
            l1 = decide(shape, facts, overrides={"tk": 64}).config
            assert dataclasses.replace(l1, tk=c.tk, unroll=c.unroll) == dataclasses.replace(c, order=l1.order)
            assert decide(shape, facts, slices=12).config.tk * c.jpack * 4 <= l1_panel  # attention's heads: L1
    if facts.half_rate_fma:
        plan = decide(kernel_shape("qkv", 384), facts)
        tk = next(d for d in plan.decisions if d.knob == "tk")
        assert tk.rule == "R4" and "384 rows reuse each panel" in tk.why and "1/8 L2" in tk.why


def test_more_threads_split_m_only_when_columns_run_out():
    shape = kernel_shape("qkv", 384)
    two, twelve = decide(shape, ZEN3).config, decide(shape, BIG).config
    assert two.tm == 384  # 8 column tasks are enough for 2 threads: B is packed once
    assert twelve.tasks(shape) >= 48 and twelve.tn <= two.tn


@pytest.mark.parametrize("M", [1, 2, 3])
def test_tiny_m_gets_a_tile_of_m_rows_and_reads_b_in_place(M):
    c = decide(kernel_shape("mlp_expand", M), ZEN3).config
    assert c.mr == M and c.padded(kernel_shape("mlp_expand", M))[0] == M  # no padded rows
    assert not c.pack_b  # one row block: a packed panel would be read once
    assert decide(kernel_shape("mlp_expand", M), ZEN3, layout="NT").config.pack_b  # NT still needs the transpose


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_gemv_tile_takes_all_rows_where_that_costs_no_accumulators(profile):
    """R2 on R12's path: of tiles with as many accumulators, the one of all M rows, so B is streamed once."""
    facts = PROFILES[profile]
    lanes, regs = facts.simd_lanes_fp32, vector_registers(facts)
    for M in range(1, GEMV_MAX_ROWS + 1):
        for N in (768, 1024, 4096):
            c = decide(MatmulShape(M, 1024, N), facts).config
            nv = c.jpack // lanes
            acc = min(c.mr * nv, regs - nv - 1)
            whole = [v for v in range(1, 5) if M * v + v + 1 <= regs and N % (v * lanes) == 0
                     and min(M * v, regs - v - 1) >= acc]
            assert (c.mr == M) == bool(whole), (M, N, c, whole)
    if regs == 16:  # AVX2 at M = 4: 4 rows x 2 vectors (8 accumulators), not 2 rows x 4 in two row blocks
        shape = MatmulShape(4, 1024, 1024)
        c = decide(shape, facts).config
        assert (c.mr, c.jpack // lanes, c.padded(shape)[0] // c.mr) == (4, 2, 1)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_b_is_packed_where_enough_rows_reuse_it_or_its_rows_lie_whole_pages_apart(profile):
    """R5 over several facts profiles: a few rows (at most UNPACKED_MAX_ROWS) read B in place unless B's rows
    are a whole number of pages apart; more rows, in two or more row blocks, pack it. Where the widest FMAs
    issue at half rate, up to HALF_RATE_UNPACKED_MAX_ROWS rows read it in place, page-aligned rows or not."""
    facts = PROFILES[profile]
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for M in sorted({8, UNPACKED_MAX_ROWS, 2 * UNPACKED_MAX_ROWS, HALF_RATE_UNPACKED_MAX_ROWS,
                         HALF_RATE_UNPACKED_MAX_ROWS + 32}):
            shape = kernel_shape(kernel, M)
            plan = decide(shape, facts)
            c = plan.config
            row_blocks = c.padded(shape)[0] // c.mr
            aliased = shape.N * 4 % PAGE_BYTES == 0  # mlp_expand: 3072 floats, 3 pages
            if facts.half_rate_fma:
                want = row_blocks >= 2 and M > HALF_RATE_UNPACKED_MAX_ROWS
            else:
                want = row_blocks >= 2 and (M > UNPACKED_MAX_ROWS or aliased)
            assert c.pack_b == want, (kernel, M, c)
            why = next(d.why for d in plan.decisions if d.knob == "pack_b")
            if row_blocks >= 2 and not want:
                assert f"only {M} rows reuse B" in why
                assert ("half rate" in why) == bool(facts.half_rate_fma)
            if want and aliased:
                assert "pages apart" in why
    assert not decide(kernel_shape("qkv", 16), ZEN3).config.pack_b
    assert decide(kernel_shape("qkv", 32), ZEN3).config.pack_b
    assert decide(kernel_shape("qkv", 8), ZEN3, layout="NT").config.pack_b  # NT always packs: the transpose


@pytest.mark.parametrize("half_rate", [True, False, None])
def test_half_rate_fma_moves_r5_r4_and_nothing_else(half_rate):
    """Only R5 and R4 read the measured FMA rate: unknown (facts saved before it was measured) is full rate, and
    a half-rate core keeps every other knob's rule, R6's narrow tasks aside (they are for packed B). R4 moves
    from HALF_RATE_L2_TK_MIN_ROWS rows (test_from_192_rows_on_half_rate_fmas_tk_comes_from_l2): pinned to the
    L1-sized TK, those plans are as before."""
    base = dataclasses.replace(PROFILES["avx512"], half_rate_fma=False)
    facts = dataclasses.replace(base, half_rate_fma=half_rate)
    for kernel in ("qkv", "mlp_expand", "mlp_reduce"):
        for M in (1, 16, 32, 64, 65, 96, 384):
            shape = kernel_shape(kernel, M)
            ref = decide(shape, base)
            l1_tk = {"tk": ref.config.tk} if half_rate and M >= HALF_RATE_L2_TK_MIN_ROWS else {}
            got = decide(shape, facts, overrides=l1_tk)
            if l1_tk:
                assert decide(shape, facts).config.tk > ref.config.tk
                assert got.config == ref.config, (kernel, M)
                continue
            if not half_rate or got.config.pack_b == ref.config.pack_b:
                assert got.config == ref.config, (kernel, M)
                continue
            assert M <= HALF_RATE_UNPACKED_MAX_ROWS and ref.config.pack_b and not got.config.pack_b
            pinned = decide(shape, facts, overrides={"pack_b": True}).config  # the knob back: the rest as before
            assert pinned == ref.config, (kernel, M)


def test_float64_halves_the_lanes():
    c = decide(kernel_shape("qkv", 64), ZEN3, dtype="float64").config
    assert c.vector == 4 and c.jpack % 4 == 0


def test_every_decision_names_its_rule():
    plan = decide(kernel_shape("mlp_expand", 96), ZEN3)
    assert {d.rule for d in plan.decisions} <= set(RULES)
    assert {d.knob for d in plan.decisions} == {f.name for f in dataclasses.fields(RuleConfig)} | {"prefetch"}
    assert [d.knob for d in plan.decisions if d.knob not in plan.config.as_dict()] == ["prefetch"]  # R14: the plan's
    text = plan.table()
    for d in plan.decisions:
        assert d.rule in text and d.knob in text
    for level in ("registers", "L1", "L2"):
        assert level in text
    assert "24.0 KiB" in text  # the 256 x 24 packed micro-panel


# --------------------------------------------------------------------------- overrides and errors
def test_overrides_pin_knobs_and_say_so():
    plan = decide(kernel_shape("qkv", 16), ZEN3, overrides={"tk": 64, "order": "ifirst"})
    assert plan.config.tk == 64 and plan.config.order == "ifirst"
    pinned = {d.knob: d.rule for d in plan.decisions}
    assert pinned["tk"] == "user" and pinned["order"] == "user" and pinned["jpack"] == "R2"
    assert "overridden by the caller: tk=64, order=ifirst" in plan.table()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("rule_based[tk=64]", ("rule_based", {"tk": 64})),
        ("rule_based[pack_b=off, order=ifirst]", ("rule_based", {"pack_b": False, "order": "ifirst"})),
        ("rule_based[]", ("rule_based", {})),
        ("rule_based", None),
    ],
)
def test_parse_overrides(text, expected):
    assert parse_overrides(text) == expected


@pytest.mark.parametrize("text", ["rule_based[tq=4]", "rule_based[tk]", "rule_based[=3]", "rule_based[tk=64,tk=32]"])
def test_bad_override_names_the_knobs(text):
    knobs = "jpack, kparts, mr, order, pack_b, prefetch, tk, tm, tn"
    with pytest.raises(RuleError, match=f"knob=value with knob one of: {knobs}"):
        parse_overrides(text)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"jpack": 12}, "jpack 12 is not a multiple of the vector width 8"),
        ({"tn": 100}, "tn 100 is not a multiple of jpack 24"),
        ({"tm": 6}, "tm 6 is not a multiple of mr 4"),
        ({"tk": 0}, "tk must be a positive integer, got 0"),
        ({"unroll": 3}, "unroll 3 does not divide tk 256"),
        ({"writeback": 12}, "writeback 12 must be a multiple of the vector width 8"),
        ({"order": "kfirst"}, "order 'kfirst' is not one of jfirst, ifirst"),
        ({"tk": "big"}, "tk must be a positive integer, got 'big'"),
        ({"speed": 9}, "unknown rule knob"),
    ],
)
def test_illegal_configs_are_refused_with_the_reason(overrides, message):
    with pytest.raises(RuleError, match=message):
        decide(kernel_shape("qkv", 64), ZEN3, overrides=overrides)


def test_variant_name_with_overrides_builds_that_config():
    v = get_variant("rule_based[tk=64,unroll=2]")
    assert v.family == "rule" and v.name == "rule_based[tk=64,unroll=2]"
    d = variant_decisions("rule_based[tk=64,unroll=2]", kernel_shape("qkv", 32))
    assert d["tk"] == 64 and d["unroll"] == 2 and d["parallel_tasks"] >= 2
    with pytest.raises(ValueError, match="unknown variant 'nope\\[tk=1\\]'; known variants: baseline"):
        get_variant("nope[tk=1]")


def test_an_illegal_override_fails_before_scheduling():
    shape = kernel_shape("qkv", 16)
    jpack = decide(shape, HOST).config.jpack
    tn = jpack * 4 + HOST.simd_lanes_fp32  # a multiple of the vector, not of the j-pack
    with pytest.raises(ValueError, match=f"tn {tn} is not a multiple of jpack {jpack}"):
        schedule(f"rule_based[tn={tn}]", shape)


# --------------------------------------------------------------------------- correctness where the rules branch
@given(shape=shapes())
@example(shape=MatmulShape(1, 1, 1))
@example(shape=MatmulShape(1, 96, 95))
@example(shape=MatmulShape(7, 13, 97))
@example(shape=MatmulShape(5, 100, 40))
@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_rule_based_is_exact_on_awkward_shapes(layout, target, shape):
    kernel = (build_cached("rule_based", shape, "float32", layout) if target == "host" else
              build("rule_based", shape, layout=layout, facts=RUNNABLE[target]))
    a, b = make_inputs(shape, layout=layout, kind="int", seed=shape.M + 31 * shape.K)
    check = compare(kernel.run(a, b), a, b, layout=layout, kind="int")
    assert check.ok, f"rule_based {shape} {layout} on {target}: {check}"


@pytest.mark.parametrize("shape", ODD[:3] + [kernel_shape(k, 77, MODELS["bert-large"]) for k in ("qkv", "mlp_reduce")],
                         ids=str)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_rule_based_outside_bert(shape, layout):
    assert verify(build_cached("rule_based", shape, "float32", layout), seed=3).ok


LANES = HOST.simd_lanes_fp32
ABLATED = MatmulShape(33, 512, 15 * LANES)
ABLATED_JPACK = decide(ABLATED, HOST).config.jpack


@pytest.mark.parametrize("overrides", ["pack_b=off", "order=ifirst", f"writeback={ABLATED_JPACK}", "tk=256,unroll=8",
                                       f"jpack={2 * LANES}"])
def test_ablation_configs_stay_correct(overrides):
    assert verify(build(f"rule_based[{overrides}]", ABLATED), seed=4).ok


def test_rule_based_float64():
    assert verify(build("rule_based", MatmulShape(19, 70, 45), dtype="float64"), seed=2).ok


@pytest.mark.parametrize("target", RUNNABLE)
def test_hot_loop_is_a_full_width_register_tile(target):
    """The accumulate loop has mr x jpack/lanes packed FMAs at the target's width (the host's, and AVX2's
    where the host has AVX-512)."""
    shape = kernel_shape("qkv", 64)
    kernel = build_cached("rule_based", shape) if target == "host" else build("rule_based", shape,
                                                                               facts=RUNNABLE[target])
    c = decide(shape, kernel.facts).config
    n = count_vector_fma(kernel.source("asm"), kernel.facts)
    assert n >= c.mr * c.jpack // c.vector


@pytest.mark.parametrize("name", [*RUNNABLE, *sorted(FACTS)])
@pytest.mark.parametrize("shape", [kernel_shape("qkv", 64), MatmulShape(5, 100, 40)], ids=str)
def test_nt_packing_loads_rows_of_b_and_transposes_tiles(name, shape):
    """NT packs B by square tiles: vector loads along K (B's contiguous axis), an unrolled loop over rows.
    Vectorizing along j instead made every vector a gather of rows K apart (the layer's matmuls ran at
    half the speed of the same NN kernel)."""
    facts = RUNNABLE.get(name) or FACTS[name]
    c = decide(shape, facts, layout="NT").config
    lanes = math.gcd(c.vector, c.tk)
    tir = schedule("rule_based", shape, layout="NT", facts=facts).mod.script()
    at = re.search(r'T\.sblock\("B(_pad)?_global"\)', tir).start()
    pack = tir[:at].splitlines()[:-1]  # the loops above the packing block
    row, lane = pack[-2].strip(), pack[-1].strip()
    assert row.endswith(f"in T.unroll({lanes}):") and lane.endswith(f"in T.vectorized({lanes}):"), pack[-2:]
    lane_var = lane.split()[1]
    body = tir[at:].splitlines()
    k_axis = next(line for line in body if line.strip().startswith("v1 = "))
    assert k_axis.rstrip().endswith(f"+ {lane_var})"), k_axis  # the vector lanes walk along K
    if name in RUNNABLE:  # the targets this machine can run
        assert verify(build("rule_based", shape, layout="NT", facts=facts), seed=5).ok


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_padding_keeps_the_hot_loop_free_of_predicates(name):
    """M = 17 and N = 50 fit no tile: rows are padded, and N is padded (16 lanes) or split into whole j-packs
    and R3's in-place tail (4 and 8 lanes, blocks ``C_j0_update`` and ``C_j1_update``). No accumulating block
    carries a predicate either way."""
    tir = schedule("rule_based", MatmulShape(17, 100, 50), facts=PROFILES[name]).mod.script()
    assert "A_pad" in tir and "C_pad" in tir  # rows grew: the padded C is copied out
    blocks = {m.group(1): m.start() for m in re.finditer(r'T\.sblock\("(\w+)"\)', tir)}
    starts = sorted(blocks.values()) + [len(tir)]
    updates = [b for b in blocks if b.endswith("_update")]
    assert updates, sorted(blocks)
    for b in updates:
        body = tir[blocks[b]:starts[starts.index(blocks[b]) + 1]]
        assert "T.where" not in body, (name, b)


@pytest.mark.parametrize(("shape", "overrides", "copied"), [
    (MatmulShape(77, 128, 192), {"mr": 6, "jpack": 3 * LANES}, False),  # M grows, N and K whole: C stored in place
    (MatmulShape(10, 4096, 16), {"mr": 4, "jpack": LANES, "kparts": 2}, True),  # R13's sum: an init and an update
    (MatmulShape(7, 64, 3 * LANES + 3), {"mr": 4, "jpack": LANES}, True),  # R3's tail writes C from its own part
    (MatmulShape(50, 256, 4 * LANES), {"mr": 8, "tm": 32, "jpack": LANES}, True),  # whole row blocks of padding
], ids=["rows", "k-split", "tail", "pinned-tm"])
def test_rows_padded_alone_are_stored_by_the_write_back(shape, overrides, copied):
    """R3: where only M grew, no padded C is copied out after the kernel: the write-back stores C's own rows, the
    padded ones masked off outside the hot loop. Where another block writes the padded C too, or a pinned TM
    leaves whole row blocks of padding, it is copied out. Exact against NumPy either way."""
    name = "rule_based[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    c = decide(shape, HOST, overrides=overrides).config
    assert c.padded(shape) == (_round_up(shape.M, c.tm), shape.N, shape.K) and shape.M % c.mr, c  # rows alone
    assert bool(c.tail(shape)) == (shape.N % c.jpack != 0), c
    tir = schedule(name, shape).mod.script()
    assert "A_pad" in tir and ('sblock("C_pad")' in tir) == copied
    assert verify(build(name, shape), seed=3).ok


@pytest.mark.parametrize(("M", "mr", "tm"), [(64, 6, 6), (22, 6, 12), (22, 4, 8), (62, 8, 16), (7, 4, 4)])
def test_rows_padded_where_tvm_refuses_the_in_place_write_back_are_copied_out_and_exact(M, mr, tm):
    """TVM's own check of inlining the padded C into the write-back fails for some row counts past the last whole
    row block (64 rows in tasks of 6: the rules' config with 6-row tiles for one j-pack of N); the schedule then
    copies C out instead of failing. Unchecked (``debug_mask=0``) the inline stays: its code is right."""
    shape = MatmulShape(M, 256, LANES)
    name = f"rule_based[mr={mr},tm={tm},jpack={LANES},tn={LANES}]"
    assert verify(build(name, shape), seed=4).ok
    unchecked = schedule(name, shape, debug_mask=0).mod.script()
    assert 'sblock("C_pad")' not in unchecked
    checked = schedule(name, shape).mod.script()
    assert ('sblock("C_pad")' in checked) == (M % tm % 2 == 0)  # the cases seen: an even number of rows left over


def test_the_rules_config_builds_for_every_row_count_over_one_j_pack():
    """Every M from 2 to 100 over one j-pack of N, where R7 gives tasks of one row tile and R2 pads M."""
    for M in range(2, 101):
        shape = MatmulShape(M, 64, LANES)
        schedule("rule_based", shape)
    for M in (21, 22, 64, 93):
        assert verify(build("rule_based", MatmulShape(M, 256, LANES)), seed=M).ok


def test_a_batched_block_with_padded_rows_is_exact():
    """Attention's heads: batch loops outermost, M padded to the tile, C's rows stored by the write-back."""
    heads, one = 3, MatmulShape(7, 64, 2 * LANES)
    cfg = decide(one, HOST, slices=heads, overrides={"mr": 4, "jpack": LANES}).config
    assert cfg.padded(one)[0] == 8
    got, want, tir = run_batched(cfg, one, heads, "NN", HOST)
    assert 'sblock("C_pad")' not in tir
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- narrow N: R2's cover and R13's K split
def _round_up(x, m):
    return -(-x // m) * m


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("M", [1, 3, 16])
def test_a_narrow_output_gets_the_narrowest_tile_that_covers_it(facts, M):
    """N below four vectors is padded to whole vectors only, never to a wider tile (which copied B per call)."""
    lanes = facts.simd_lanes_fp32
    for n in (1, lanes // 2 + 1, lanes, lanes + 1, 2 * lanes, 3 * lanes - 1):
        c = decide(MatmulShape(M, 4096, n), facts).config
        assert c.jpack == _round_up(n, lanes), (n, c)
        assert c.padded(MatmulShape(M, 4096, n))[1] == _round_up(n, lanes)


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("M, K, N", [(1, 4096, 16), (1, 11008, 32), (4, 8192, 64), (1, 768, 16), (3, 3000, 20),
                                     (1, 4096, 4096), (16, 4096, 16), (384, 3072, 768)])
def test_k_is_split_only_when_the_output_leaves_threads_idle_and_k_is_long(facts, M, K, N):
    shape = MatmulShape(M, K, N)
    plan = decide(shape, facts)
    c, threads = plan.config, facts.runtime_threads
    output_tasks = c.tasks(shape) // c.kparts
    want = 1 if output_tasks >= threads else max(1, min(-(-threads // output_tasks), K // KPART_MIN_K))
    assert c.kparts == want
    rule = next(d.rule for d in plan.decisions if d.knob == "kparts")
    # R12 splits K where a GEMV's column ranges would crowd L2 (whole rows per thread; see below)
    assert rule == "R13" or rule == "R12" and c.tn == c.padded(shape)[1] and c.kparts == threads
    if c.kparts > 1:
        assert K // c.kparts >= KPART_MIN_K and c.padded(shape)[2] % (c.tk * c.kparts) == 0


def test_k_stays_whole_on_every_bert_shape():
    for facts in FACTS.values():
        assert all(decide(w.shape, facts).config.kparts == 1 for w in bert_shapes())


@pytest.mark.parametrize("variant", ["rule_based", "rule_based[kparts=2]", "rule_based[kparts=3]"])
@pytest.mark.parametrize("shape", [MatmulShape(1, 4100, 16), MatmulShape(3, 1000, 20), MatmulShape(2, 77, 130),
                                   MatmulShape(1, 9, 5)], ids=str)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_a_split_k_is_exact_with_and_without_padding(variant, shape, layout):
    kernel = build(variant, shape, layout=layout)
    a, b = make_inputs(shape, layout=layout, kind="int", seed=shape.K)
    check = compare(kernel.run(a, b), a, b, layout=layout, kind="int")
    assert check.ok, f"{variant} {shape} {layout}: {check}"


def test_a_split_k_sums_private_partials_in_parallel():
    """Each part accumulates into its own slice of C_rf; the sum over parts is a second parallel, vector loop."""
    shape = MatmulShape(1, 2 * KPART_MIN_K, HOST.simd_lanes_fp32)
    assert decide(shape, HOST).config.kparts == 2
    tir = schedule("rule_based", shape).mod.script()
    assert "C_rf = T.sblock_alloc_buffer((2, 1," in tir
    assert tir.count("T.parallel(") == 2
    total = tir[tir.rindex("T.parallel("):]  # the second parallel loop holds the sum over the parts
    assert "C[v_i, v_j] + C_rf[vk_0, v_i, v_j]" in total and "T.vectorized(" in total


# --------------------------------------------------------------------------- R12: whole rows of B per thread
@pytest.mark.parametrize(("row", "part", "expected"), [
    (PAGE_BYTES, PAGE_BYTES // 2, 2.0),  # half of every page, the same half
    (PAGE_BYTES // 2, PAGE_BYTES // 4, 2.0),  # two rows per page, the first half of each
    (2 * PAGE_BYTES, PAGE_BYTES, 1.0),  # whole pages
    (3 * PAGE_BYTES // 4, 3 * PAGE_BYTES // 8, 4 / 3),  # bert-base's 768 floats: four shifted copies
    (3 * PAGE_BYTES // 2, 3 * PAGE_BYTES // 4, 4 / 3),
    (3 * PAGE_BYTES, 3 * PAGE_BYTES // 2, 4 / 3),
])
def test_set_pressure_counts_how_often_each_page_offset_is_read(row, part, expected):
    assert set_pressure(row, part) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [(0, 64), (64, 0), (-4096, 2048)])
def test_set_pressure_refuses_empty_rows_or_ranges(bad):
    with pytest.raises(ValueError, match="positive"):
        set_pressure(*bad)


TWO_THREADS = {k: f for k, f in FACTS.items() if f.runtime_threads == 2}


@pytest.mark.parametrize("facts", TWO_THREADS.values(), ids=TWO_THREADS.keys())
@pytest.mark.parametrize("M", [1, GEMV_MAX_ROWS])
@pytest.mark.parametrize("pages_per_row", [1, 2])
def test_a_gemv_gives_each_thread_whole_rows_where_its_column_range_would_not_stay_in_l2(facts, M, pages_per_row):
    """Split by columns, a thread reads part of every row of B; when those parts crowd the cache sets (or just
    fill L2) while the same bytes as one slab of rows fit, the threads take whole rows and sum their parts."""
    threads, l2 = facts.runtime_threads, facts.l2_bytes
    n = pages_per_row * PAGE_BYTES // 4
    pressure = set_pressure(n * 4, n * 4 // threads)
    assert pressure == (2.0 if pages_per_row == 1 else 1.0)
    for share in (l2 // 4, l2 // 2, l2, 2 * l2):  # B's bytes per thread
        shape = MatmulShape(M, share * threads // (n * 4), n)
        plan = decide(shape, facts)
        c = plan.config
        split = share <= l2 <= share * pressure
        assert (c.kparts, c.tn) == ((threads, n) if split else (1, n // threads)), (share, c)
        assert {d.knob: d.rule for d in plan.decisions}["kparts"] == ("R12" if split else "R13")
        assert decide(shape, facts, layout="NT").config.kparts == 1  # NT packs B: not the GEMV path
    # pinned column ranges keep K whole
    assert decide(MatmulShape(M, l2 * threads // (n * 4), n), facts, overrides={"tn": n // threads}).config.kparts == 1


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("M", [1, 3])
def test_a_gemv_split_into_whole_rows_is_exact(target, M):
    facts = RUNNABLE[target]
    n = PAGE_BYTES // 4
    shape = MatmulShape(M, facts.l2_bytes * facts.runtime_threads // (n * 4), n)
    if facts.runtime_threads > 1:
        assert decide(shape, facts).config.kparts == facts.runtime_threads
    kernel = build("rule_based", shape, facts=facts)
    a, b = make_inputs(shape, kind="int", seed=M)
    check = compare(kernel.run(a, b), a, b, kind="int")
    assert check.ok, f"rule_based {shape} on {target}: {check}"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_gemv_whose_b_exceeds_its_l3_share_takes_one_vector_across_j(profile):
    """R12: a GEMV whose B exceeds NARROW_MAX_L3_SHARE of L3 streams B from memory one vector across j at a
    time; where B fits that share, or the L3 is unknown, or M is past the GEMV path, R2's j-pack stands."""
    facts = PROFILES[profile]
    lanes, unknown_l3 = facts.simd_lanes_fp32, dataclasses.replace(facts, l3_bytes=None)
    moved = 0
    for M in range(1, GEMV_MAX_ROWS + 2):
        for K, N in ((4096, 4096), (1024, 1024), (16384, 4096), (1024, 1000)):
            shape = MatmulShape(M, K, N)
            plan, r2 = decide(shape, facts), decide(shape, unknown_l3).config
            jpack = next(d for d in plan.decisions if d.knob == "jpack")
            if M <= GEMV_MAX_ROWS and K * N * 4 > facts.l3_bytes * NARROW_MAX_L3_SHARE and r2.jpack > lanes:
                assert (plan.config.jpack, jpack.rule) == (lanes, "R12"), (shape, plan.config)
                assert "streams from memory" in jpack.why
                moved += 1
            else:
                assert (plan.config.jpack, jpack.rule) == (r2.jpack, "R2"), (shape, plan.config)
    assert moved
    nt = MatmulShape(1, 16384, 4096)
    assert decide(nt, facts, layout="NT").config.jpack == decide(nt, unknown_l3, layout="NT").config.jpack


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("M", [1, 3])
def test_a_gemv_of_one_vector_across_j_is_exact(target, M):
    facts = dataclasses.replace(RUNNABLE[target], l3_bytes=2 * 1024 * 1024)  # B of 4 MB lies beyond the L3 share
    shape = MatmulShape(M, 1024, 1000)  # N no multiple of the vector: R3's tail as well
    assert decide(shape, facts).config.jpack == facts.simd_lanes_fp32
    kernel = build("rule_based", shape, facts=facts)
    a, b = make_inputs(shape, kind="int", seed=M)
    check = compare(kernel.run(a, b), a, b, kind="int")
    assert check.ok, f"rule_based {shape} on {target}: {check}"


def test_a_split_k_is_refused_below_one_part_per_k():
    with pytest.raises(RuleError, match="kparts must be a positive integer"):
        get_variant("rule_based[kparts=0]")


def test_template_records_written_before_kparts_still_load_and_keep_their_names():
    from matmul.schedules.template import config_from_dict, config_name

    shape = MatmulShape(1, 2 * KPART_MIN_K, 16)
    split = decide(shape, HOST).config
    assert split.kparts == 2 and config_name(split).endswith(",kparts=2]")
    old = {k: v for k, v in decide(kernel_shape("qkv", 64), HOST).config.as_dict().items() if k != "kparts"}
    loaded = config_from_dict(old)
    assert loaded.kparts == 1 and "kparts" not in config_name(loaded)
    assert get_variant(config_name(split)) is not None


# --------------------------------------------------------------------------- batched blocks (attention's heads)
ATTENTION = [MatmulShape(128, 64, 128), MatmulShape(128, 128, 64), MatmulShape(384, 64, 384)]


@pytest.mark.parametrize("facts", FACTS.values(), ids=FACTS.keys())
@pytest.mark.parametrize("shape", ATTENTION, ids=str)
def test_batch_slices_count_as_tasks_so_m_and_n_are_cut_no_finer_than_the_threads_need(facts, shape):
    """With 12 heads there are tasks for every thread without cutting a slice; each cut repacks B per row
    block (the attention functions ran 1.3x slower with 11 row blocks per head)."""
    one, many = decide(shape, facts).config, decide(shape, facts, slices=12).config
    assert (many.mr, many.jpack, many.tk) == (one.mr, one.jpack, one.tk)  # the register and L1 rules ignore slices
    assert many.tm >= one.tm and many.tn >= one.tn
    mp, np_, _ = many.padded(shape)
    if 12 >= 4 * facts.runtime_threads:  # the slices alone give every thread its tasks: no cut at all
        assert many.tm == mp or mp * many.tn * 4 > facts.l2_bytes // 2  # unless the C tile outgrows half of L2
    assert 12 * many.tasks(shape) >= min(2 * facts.runtime_threads, 12 * one.tasks(shape))
    assert decide(shape, facts, slices=1).config == one


def test_the_pass_gives_the_rules_the_slices_and_the_decisions_count_their_tasks():
    shape = ATTENTION[0]
    ctx = ScheduleContext(shape, "float32", "NT", HOST, slices=12)
    v = get_variant("rule_based")
    d = v.decisions(ctx)
    assert d["tm"] == decide(shape, HOST, layout="NT", slices=12).config.tm
    assert d["parallel_tasks"] == 12 * decide(shape, HOST, layout="NT", slices=12).config.tasks(shape)


@pytest.mark.parametrize("slices", [0, -1, 1.5, True])
def test_bad_slices_are_refused(slices):
    with pytest.raises(ValueError, match="slices must be a positive integer"):
        decide(ATTENTION[0], HOST, slices=slices)


def test_a_pinned_tile_wider_than_the_output_pads_it_instead_of_crashing():
    """tn=128 on N=64 used to divide by zero counting tasks; now it pads N and computes the product."""
    shape = MatmulShape(128, 128, 64)
    assert decide(shape, HOST, overrides={"tn": 128}).config.tn == 128
    assert verify(build("rule_based[tn=128]", shape), seed=6).ok


def test_padding_copies_of_a_batched_block_run_in_parallel_over_batch_and_rows():
    """The pad copies' outer loop was the leading batch loop, of extent 1 in attention: they ran on one thread."""
    b = te.placeholder((1, 12, 13, 16), name="A")
    w = te.placeholder((1, 12, 16, 13), name="B")
    k = te.reduce_axis((0, 16), name="k")
    c = te.compute((1, 12, 13, 13), lambda x, h, i, j: te.sum(b[x, h, i, k] * w[x, h, k, j], axis=k), name="C")
    sch = Schedule(tvm.IRModule({"main": te.create_prim_func([b, w, c])}))
    shape = MatmulShape(13, 16, 13)
    cfg = decide(shape, AVX512, slices=12).config
    apply_config(sch, cfg, shape, "NN", "C")
    pads = [blk for blk in ("A_pad", "B_pad", "C_pad") if blk in sch.mod.script()]
    assert pads
    for name in pads:
        outer = sch.get(sch.get_loops(sch.get_sblock(name))[0])
        assert str(outer.kind).endswith("Parallel") or int(outer.kind) == 1, (name, outer.kind)
        assert int(outer.extent) >= 12 * 13, (name, outer.extent)  # batch x heads x rows, fused
