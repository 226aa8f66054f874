"""R8's second half: where the task's block of A cannot stay in L2 between the task's j-packs (more of its lines
share one L2 set than the L2 has ways), each row block takes every j-pack in turn (``order = ifirst``).

Decisions are checked on every facts profile whatever the host, each expected value derived from the profile's
L2 size and ways; the kernels the rule picks are checked exact on this host."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matmul import MatmulShape, build, verify
from matmul.core.workloads import MODELS, bert_shapes, kernel_shape
from matmul.schedules.rules import GEMV_MAX_ROWS, block_set_load, decide

from .profiles import HOST, PROFILES

WAYS = {name: f for name, f in PROFILES.items() if f.l2_ways}


def _brute_force(row_bytes, rows, chunk_bytes, period, line=64):
    """Every byte of every row's chunk, its line, each distinct line counted once in its set."""
    lines = {(r * row_bytes + b) // line for r in range(rows) for b in range(chunk_bytes)}
    counts = {}
    for n in lines:
        counts[n % (period // line)] = counts.get(n % (period // line), 0) + 1
    return max(counts.values())


@given(row_bytes=st.integers(1, 3000), rows=st.integers(1, 40), chunk_bytes=st.integers(1, 700),
       period_lines=st.sampled_from([1, 2, 4, 8, 32]))
def test_block_set_load_counts_the_fullest_set(row_bytes, rows, chunk_bytes, period_lines):
    """Against a byte-by-byte count: strides of any byte count (rows that end and start in one line share it)."""
    args = (row_bytes, rows, chunk_bytes, period_lines * 64)
    assert block_set_load(*args) == _brute_force(*args)


def test_block_set_load_on_the_shapes_that_led_to_the_rule():
    period = 2 * 1024 * 1024 // 16  # a 2 MiB 16-way L2
    assert block_set_load(16384 * 4, 200, 128 * 4, period) == 100  # ALBERT's MLP reduce: two sets' worth of offsets
    assert block_set_load(16000 * 4, 200, 128 * 4, period) <= 2  # 125 lines apart: spread over the sets
    assert block_set_load(3072 * 4, 200, 128 * 4, period) == 7  # BERT-base's MLP reduce: 32 offsets of 4 KiB


@pytest.mark.parametrize("args", [(0, 1, 64, 64), (64, 0, 64, 64), (64, 1, 0, 64), (64, 1, 64, 0), (64, 1, 64, 64, 0)])
def test_block_set_load_refuses_non_positive_sizes(args):
    with pytest.raises(ValueError, match="positive"):
        block_set_load(*args)


def _expected_order(shape, facts, c, layout):
    if (shape.M <= GEMV_MAX_ROWS and layout == "NN") or c.tn // c.jpack < 2:
        return "jfirst"  # one j-pack per task (or the GEMV path): A's block is read once either way
    k_row = c.padded(shape)[2] * 4  # A's rows as the kernel reads them: K padded where R3 pads it
    load = block_set_load(k_row, c.tm, c.tk * 4, facts.l2_bytes // facts.l2_ways)
    return "ifirst" if load > facts.l2_ways else "jfirst"


ROW_SHAPES = [kernel_shape(k, m, MODELS[model]) for model in ("bert-large", "albert-xxlarge", "llama2-7b")
              for k in ("qkv", "mlp_expand", "mlp_reduce") for m in (1, 7, 77, 200, 384)]


@pytest.mark.parametrize("name", sorted(WAYS))
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_row_blocks_go_first_exactly_where_a_block_overfills_an_l2_set(name, layout):
    facts = WAYS[name]
    for shape in ROW_SHAPES + [w.shape for w in bert_shapes()]:
        plan = decide(shape, facts, layout=layout)
        c = plan.config
        assert c.order == _expected_order(shape, facts, c, layout), (name, shape, c)
        why = next(d.why for d in plan.decisions if d.knob == "order")
        assert ("L2 set" in why) == (c.order == "ifirst"), why


@pytest.mark.parametrize("name", sorted(WAYS))
def test_rows_one_l2_period_apart_take_row_blocks_first_unless_the_ways_hold_them(name):
    """K such that A's rows lie one L2 period (size / ways) apart: every row of the task's block lands on the
    same sets, one line each, so more rows than ways overfill them. Rows one block-row further apart (K + TK)
    spread over the sets; an L2 of as many ways as the block has rows (same period) holds it."""
    facts = WAYS[name]
    period = facts.l2_bytes // facts.l2_ways
    M, N = 4 * facts.l2_ways + 8, 64 * facts.simd_lanes_fp32 * 4
    aliased = MatmulShape(M, period // 4, N)
    c = decide(aliased, facts).config
    assert c.tn // c.jpack >= 2 and c.tm > facts.l2_ways, c  # the shape makes the rule's case
    assert c.order == "ifirst"
    spread = MatmulShape(M, period // 4 + c.tk, N)
    assert decide(spread, facts).config.tk == c.tk
    assert decide(spread, facts).config.order == "jfirst"
    for ways, order in ((c.tm, "jfirst"), (c.tm - 1, "ifirst")):
        wider = dataclasses.replace(facts, l2_ways=ways, l2_bytes=period * ways)
        got = decide(aliased, wider).config
        assert (got.tm, got.order) == (c.tm, order), (ways, got)
    unknown = dataclasses.replace(facts, l2_ways=None)  # facts saved before the ways were recorded
    assert decide(aliased, unknown).config.order == "jfirst"
    assert decide(aliased, facts, overrides={"order": "jfirst"}).config.order == "jfirst"


def _small_set_cases(facts):
    """An L2 whose sets repeat every 4 KiB (256 KiB, 64 ways) and a small L3 (no narrow tasks) make small shapes
    the rule's case: rows of 1024 floats all land on the same sets. N of 48 j-packs (and 5 more columns, the
    ragged case) leaves every task several j-packs on 8 and 16 lanes alike; 32 + 5 gave AVX2's R3 tail one
    3-vector j-pack per task, where the order cannot matter."""
    facts = dataclasses.replace(facts, l2_bytes=256 * 1024, l2_ways=64, l3_bytes=1024 * 1024, runtime_threads=2)
    jpack = decide(MatmulShape(96, 1024, 4096), facts).config.jpack
    return facts, [(MatmulShape(96, 1024, 48 * jpack), "NN"), (MatmulShape(97, 1024, 48 * jpack + 5), "NN"),
                   (MatmulShape(96, 1024, 48 * jpack), "NT")]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_the_small_set_cases_are_the_rules_case_on_every_profile(name):
    facts, cases = _small_set_cases(PROFILES[name])
    for shape, layout in cases:
        c = decide(shape, facts, layout=layout).config
        assert c.tn // c.jpack >= 2 and c.order == "ifirst", (name, shape, layout, c)


def test_the_kernels_the_rule_picks_are_exact():
    facts, cases = _small_set_cases(HOST)
    for shape, layout in cases:
        c = decide(shape, facts, layout=layout).config
        assert c.order == "ifirst", (shape, c)
        kernel = build("rule_based", shape, layout=layout, facts=facts)
        assert verify(kernel, seed=5).ok, (shape, layout, c)
