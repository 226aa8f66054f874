"""R3's tail: N is not padded; the whole j-packs are tiled and the columns past them get loops of their own.

Padding N copies all of B on every call: on a GEMV, which streams B once, the copy cost more than the product
(M = 1, K = 1024, N = 1000 read 0.25-0.32x NumPy on the AVX-512 host); where R5 packs B, it is one more pass over
B before the packing (vocabulary heads at M = 33-384 read 1.20-1.63x slower padded). The tail's loops are split
over K as the tiles are. Decisions are checked on every facts profile, kernels on every target this host runs;
expected values come from the facts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matmul import MatmulShape, build, compare, make_inputs
from matmul.schedules.rules import (
    GEMV_MAX_ROWS,
    GEMV_STREAMS,
    RuleConfig,
    decide,
    prepacks,
)
from matmul.schedules.template import candidate_configs, config_name

from .batched import run_batched
from .profiles import PROFILES, RUNNABLE, past_in_place


def _odd_n(facts, M: int, whole_packs: int, extra: int) -> MatmulShape:
    """A GEMV shape whose N is ``whole_packs`` of the rules' j-pack plus ``extra`` columns."""
    jpack = decide(MatmulShape(M, 1024, 1024), facts).config.jpack
    return MatmulShape(M, GEMV_STREAMS * 128, whole_packs * jpack + extra)


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
@pytest.mark.parametrize("M", range(1, GEMV_MAX_ROWS + 1))
@pytest.mark.parametrize("extra", [lambda v: 1, lambda v: v // 2 + 1, lambda v: 2 * v + 1, lambda v: 3 * v - 1],
                         ids=["1", "half+1", "2v+1", "3v-1"])
def test_a_gemv_leaves_n_unpadded_and_tiles_the_whole_j_packs(facts, M, extra):
    shape = _odd_n(facts, M, 15, extra(facts.simd_lanes_fp32))  # never whole vectors: no tile divides N
    plan = decide(shape, facts)
    c = plan.config
    tail = c.tail(shape)
    assert 0 < tail < c.jpack and tail == shape.N % c.jpack
    assert c.padded(shape) == (shape.M, shape.N, shape.K)
    assert (shape.N - tail) % c.tn == 0 and not c.pack_b
    assert c.tiled(shape) == (shape.M, shape.N - tail, shape.K)
    assert c.tasks(shape) == (shape.N - tail) // c.tn * c.kparts
    why = {d.knob: d.why for d in plan.decisions}["tn"]
    assert f"the last {tail} of N's columns" in why and "R3" in why
    assert f"padded to M={shape.M} N={shape.N} K={shape.K}" in plan.table()
    assert f"N's last {tail} columns by a loop of their own" in plan.table()


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
def test_where_k_is_padded_n_is_padded_to_the_tiles_as_before(facts):
    shape = _odd_n(facts, 1, 15, 3)
    for plan in (decide(shape, facts, overrides={"kparts": 3}),  # pinned: K padded, re-planned for the padded N
                 decide(MatmulShape(1, shape.K + 3, shape.N), facts),  # K padded: B is copied anyway
                 decide(MatmulShape(64, shape.K + 3, shape.N), facts)):  # the same, B packed
        c = plan.config
        _, np_, _ = c.padded(plan.shape)
        assert c.tail(plan.shape) == 0, c
        assert np_ == -(-plan.shape.N // c.jpack) * c.jpack and np_ % c.tn == 0, (c, np_)  # to the next j-pack


@pytest.mark.parametrize("facts", PROFILES.values(), ids=PROFILES.keys())
def test_packed_b_and_padded_rows_keep_n_unpadded_too(facts):
    """Where R5 packs B (NT always, NN from a few row blocks on), the panels cover the whole j-packs only, and
    rows padded to the row tile pad A and C, never B: N stays as it is either way."""
    gemv = _odd_n(facts, 1, 15, 3)
    mr = decide(MatmulShape(64, 1024, 1024), facts).config.mr
    rows = past_in_place(8 * mr + 1, facts)  # never whole row tiles
    for plan in (decide(gemv, facts, layout="NT"),  # NT packs B
                 decide(gemv, facts, overrides={"pack_b": True}),  # pinned: B packed
                 decide(MatmulShape(rows, gemv.K, gemv.N), facts),  # R5 packs B; M padded to the row tile
                 decide(MatmulShape(rows, gemv.K, gemv.N), facts, layout="NT")):
        c, shape = plan.config, plan.shape
        tail = c.tail(shape)
        assert 0 < tail < c.jpack and tail == shape.N % c.jpack, (shape, c)
        mp, np_, kp = c.padded(shape)
        assert (np_, kp) == (shape.N, shape.K) and mp == -(-shape.M // c.tm) * c.tm, (shape, c)
        assert (shape.N - tail) % c.tn == 0
        assert not prepacks(c, shape)  # a weight packed once needs whole panels: B stays as it is, packed per call
        assert f"the last {tail} of N's columns" in {d.knob: d.why for d in plan.decisions}["tn"]
    assert decide(MatmulShape(rows, gemv.K, gemv.N), facts).config.pack_b


@settings(max_examples=200, deadline=None)
@given(M=st.integers(1, 40), K=st.integers(1, 4096), N=st.integers(1, 3000), vectors=st.integers(1, 4),
       tn_packs=st.integers(1, 8), tk=st.sampled_from([4, 8, 16, 64]), pack=st.booleans(), kparts=st.integers(1, 3))
def test_the_tail_is_fewer_than_one_j_pack_past_whole_tiles_with_b_unpadded(M, K, N, vectors, tn_packs, tk,
                                                                        pack, kparts):
    jpack = 8 * vectors
    c = RuleConfig(tm=M, tn=jpack * tn_packs, tk=tk, mr=1, jpack=jpack, vector=8, writeback=8, unroll=4,
                   pack_b=pack, kparts=kparts).check()
    shape = MatmulShape(M, K, N)
    tail = c.tail(shape)
    mp, np_, kp = c.padded(shape)
    assert mp == -(-M // c.tm) * c.tm  # rows are padded to the row tile either way: that copies A and C, not B
    if tail:
        assert 0 < tail < jpack and (N - tail) % c.tn == 0 and N - tail > 0
        assert (np_, kp) == (N, K)
    else:
        assert np_ % c.tn == 0 and np_ >= N
        assert N % jpack == 0 or N < jpack or (N - N % jpack) % c.tn or K % (tk * kparts)


TWO_THREADS = {k: f for k, f in PROFILES.items() if f.runtime_threads == 2}


@pytest.mark.parametrize("facts", TWO_THREADS.values(), ids=TWO_THREADS.keys())
@pytest.mark.parametrize("extra", [0, 5])
def test_column_ranges_that_would_load_the_threads_unevenly_give_way_to_whole_rows(facts, extra):
    """15 j-packs make 3 or 5 column ranges for 2 threads, one thread idle a third or a fifth of the time;
    whole rows per thread (K split) are even, whether B fits L2 or not (measured 1.2-1.6x faster at M = 1-3 on
    the AVX-512 host, from 4 MiB of B to 200 MiB)."""
    jpack = decide(MatmulShape(1, 1024, 1024), facts).config.jpack
    n = 15 * jpack + extra
    for share in (facts.l2_bytes // 2, facts.l2_bytes, 8 * facts.l2_bytes):
        k = share * 2 // (n * 4) // (GEMV_STREAMS * 2) * GEMV_STREAMS * 2
        plan = decide(MatmulShape(1, k, n), facts)
        assert (plan.config.kparts, plan.config.tn) == (2, 15 * jpack), (share, plan.config)
        assert "unevenly" in {d.knob: d.why for d in plan.decisions}["tn"]
        assert decide(MatmulShape(1, k, n), facts, slices=2).config.kparts == 1  # 6 or 10 tasks: even
        assert decide(MatmulShape(1, k + GEMV_STREAMS, n), facts).config.kparts == 1  # K does not split evenly
    assert decide(MatmulShape(1, 1024, jpack), facts).config.kparts == 1  # one range: R13 decides, not R12


def _shapes_for(facts) -> list[MatmulShape]:
    lanes = facts.simd_lanes_fp32
    return [_odd_n(facts, 1, 15, 5 * lanes // 2),  # K split (even rows per thread), tail of 2.5 vectors
            _odd_n(facts, 3, 2, lanes // 2 + 1),  # column ranges, tail under one vector
            MatmulShape(2, GEMV_STREAMS * 2048, 15 * decide(MatmulShape(2, 8, 1024), facts).config.jpack + 3)]


@pytest.mark.parametrize("target", RUNNABLE)
def test_a_gemv_with_a_tail_is_exact(target):
    facts = RUNNABLE[target]
    for shape in _shapes_for(facts):
        c = decide(shape, facts).config
        assert c.tail(shape) > 0, (shape, c)
        kernel = build("rule_based", shape, facts=facts)
        a, b = make_inputs(shape, kind="int", seed=shape.N)
        check = compare(kernel.run(a, b), a, b, kind="int")
        assert check.ok, f"rule_based {shape} {c} on {target}: {check}"


@pytest.mark.parametrize("target", RUNNABLE)
def test_every_template_config_of_a_tail_shape_is_exact(target):
    """The learned variant and the sweeps pick among these: each must build and be exact, tail or padded
    (K = 1021 has no tile that divides it: K is padded, so N is too)."""
    facts = RUNNABLE[target]
    odd = _odd_n(facts, 2, 3, 5)
    for shape, tails in ((odd, True), (MatmulShape(2, 1021, odd.N), False)):
        configs = candidate_configs(shape, facts, limit=40)
        assert configs and all(bool(c.tail(shape)) == tails for c in configs)
        a, b = make_inputs(shape, kind="int", seed=7)
        for c in configs:
            check = compare(build(config_name(c), shape, facts=facts).run(a, b), a, b, kind="int")
            assert check.ok, f"{config_name(c)} {shape} on {target}: {check}"


def test_an_nt_gemv_read_in_place_and_a_batched_block_keep_their_tails_exact():
    facts = RUNNABLE["host"]
    shape = _odd_n(facts, 1, 2, 5)
    cfg = decide(shape, facts, layout="NT", overrides={"pack_b": False}).config
    assert cfg.tail(shape)
    kernel = build(f"rule_based[pack_b=off,tn={cfg.tn}]", shape, layout="NT", facts=facts)
    a, b = make_inputs(shape, layout="NT", kind="int", seed=3)
    assert compare(kernel.run(a, b), a, b, layout="NT", kind="int").ok
    # a batched block (attention's heads at one query row): batch loops outside, the tail split like the tiles
    heads, one = 3, MatmulShape(1, 64, shape.N)
    cfg = decide(one, facts, slices=heads).config
    assert cfg.tail(one)
    got, want, _ = run_batched(cfg, one, heads, "NN", facts)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, GEMV_MAX_ROWS), k_blocks=st.integers(1, 96), N=st.integers(1, 700),
       kparts=st.sampled_from([None, 1, 2, 3]), dtype=st.sampled_from(["float32", "float64"]),
       target=st.sampled_from(sorted(RUNNABLE)))
def test_gemvs_of_any_width_are_exact_tail_or_not(M, k_blocks, N, kparts, dtype, target):
    """Random widths (most of them no multiple of the vector), K split or not, both element types."""
    facts = RUNNABLE[target]
    shape = MatmulShape(M, GEMV_STREAMS * k_blocks, N)
    name = "rule_based" if kparts is None else f"rule_based[kparts={kparts}]"
    kernel = build(name, shape, dtype=dtype, facts=facts)
    a, b = make_inputs(shape, dtype=dtype, kind="int", seed=N)
    check = compare(kernel.run(a, b), a, b, kind="int")
    assert check.ok, f"{name} {shape} {dtype} on {target}: {check}"


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("tail", [1, 3, 5, 31, 33])
@pytest.mark.parametrize("kparts", [1, 2])
def test_every_power_of_two_part_of_a_tail_is_exact_one_column_wide_included(target, tail, kparts):
    """The tail is cut into power-of-two widths (a loop starting past 0 cannot be split, and a vector of 40
    floats became element inserts and spills): a width of 1 has no vector, its unit loops vanish."""
    facts = RUNNABLE[target]
    jpack = decide(MatmulShape(1, 1024, 1024), facts).config.jpack
    shape = MatmulShape(2, GEMV_STREAMS * 64, 2 * jpack + tail % jpack)
    kernel = build(f"rule_based[kparts={kparts}]", shape, facts=facts)
    assert decide(shape, facts, overrides={"kparts": kparts}).config.tail(shape) == tail % jpack
    a, b = make_inputs(shape, kind="int", seed=tail)
    assert compare(kernel.run(a, b), a, b, kind="int").ok


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("layout", ["NN", "NT"])
def test_packed_tails_are_exact_rows_padded_or_not_weights_packed_once_or_not(target, layout):
    """B packed into panels of the whole j-packs, the tail read in place (a gather of rows for NT), M padded
    to the row tile or not; ``rule_based_prepacked`` falls back to packing per call, its panels not whole."""
    facts = RUNNABLE[target]
    jpack = decide(MatmulShape(64, 1024, 1024), facts).config.jpack
    # 37 rows: no tile that divides them has enough accumulators (R2), so M is padded; 48 rows: not padded.
    more = past_in_place(0, facts)  # past the rows R5 reads B in place for, the remainders kept
    for shape in (MatmulShape(37 + more, 256, 5 * jpack + 3), MatmulShape(48 + more, 256, 4 * jpack + jpack // 2 + 1)):
        c = decide(shape, facts, layout=layout).config
        assert c.pack_b and c.tail(shape), (shape, c)
        assert (c.padded(shape)[0] > shape.M) == (shape.M == 37 + more), (shape, c)
        a, b = make_inputs(shape, layout=layout, kind="int", seed=shape.M)
        for name in ("rule_based", "rule_based_prepacked"):
            got = build(name, shape, layout=layout, facts=facts).run(a, b)
            assert compare(got, a, b, layout=layout, kind="int").ok, f"{name} {shape} {layout} {c} on {target}"


def test_attention_scores_keep_their_tail_exact():
    """A batched NT block (heads x (S x d x S), S = 77: one whole j-pack or more and a tail), B packed per slice."""
    facts = RUNNABLE["host"]
    heads, one = 3, MatmulShape(77, 64, 77)
    cfg = decide(one, facts, layout="NT", slices=heads).config
    assert cfg.pack_b and cfg.tail(one), cfg
    got, want, _ = run_batched(cfg, one, heads, "NT", facts, seed=1)
    np.testing.assert_array_equal(got, want)
