"""R12 past the GEMV: a few rows in several row blocks, B from memory, stream B once (rules decide, kernels exact)."""

from __future__ import annotations

import dataclasses

import pytest

from matmul import MatmulShape, build, compare, kernel_shape, make_inputs
from matmul.schedules.rules import (
    GEMV_MAX_ROWS,
    GEMV_STREAMS,
    NARROW_MAX_L3_SHARE,
    STREAM_MAX_ROWS,
    decide,
)

from .profiles import PROFILES, RUNNABLE

SHAPES = [("llama2-7b", "qkv"), ("llama2-7b", "mlp_expand"), ("llama2-7b", "mlp_reduce"),
          ("albert-xxlarge", "mlp_reduce"), ("vit-huge", "mlp_expand"), ("bert-base", "qkv")]


def _streams(shape, facts, layout="NN", slices=1) -> bool:
    """What R12 says, from the facts: more rows than a GEMV and at most STREAM_MAX_ROWS, NN, one matrix, B beyond
    the L3 share, and R2's tile (the same rules without an L3) leaves at least two row blocks."""
    if not (GEMV_MAX_ROWS < shape.M <= STREAM_MAX_ROWS and layout == "NN" and slices == 1 and facts.l3_bytes):
        return False
    share = NARROW_MAX_L3_SHARE
    if shape.K * shape.N * 4 * share.denominator <= facts.l3_bytes * share.numerator:
        return False
    r2 = decide(shape, dataclasses.replace(facts, l3_bytes=None)).config
    return -(-shape.M // r2.mr) >= 2


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_few_rows_in_several_row_blocks_stream_b_from_memory_as_a_gemv_does(profile):
    facts = PROFILES[profile]
    moved = 0
    for M in range(GEMV_MAX_ROWS, STREAM_MAX_ROWS + 3):
        for model, kernel in SHAPES:
            shape = kernel_shape(kernel, M, model)
            plan = decide(shape, facts)
            c, rules = plan.config, {d.knob: d.rule for d in plan.decisions}
            why = {d.knob: d.why for d in plan.decisions}
            mp, np_, _ = c.padded(shape)
            if M <= GEMV_MAX_ROWS or not _streams(shape, facts):
                assert M <= GEMV_MAX_ROWS or "R12" not in rules.values(), (shape, plan.config)
                continue
            moved += 1
            assert rules["tk"] == rules["tn"] == rules["tm"] == "R12", (shape, rules)
            assert c.tk == min(shape.K, GEMV_STREAMS) and not c.pack_b and c.tm == mp and c.kparts == 1
            assert mp // c.mr >= 2 and "streams from memory" in why["pack_b"] and "streams from memory" in why["tn"]
            # one contiguous column range per thread where its C tile fits half of L2, never fewer tasks than threads
            whole = np_ - c.tail(shape) if c.tail(shape) else np_
            assert c.tn % c.jpack == 0 and whole % c.tn == 0 and c.tn <= max(c.jpack, whole // facts.runtime_threads)
            assert mp * c.tn * 4 <= facts.l2_bytes // 2 or c.tn == c.jpack
            assert c.tasks(shape) >= min(facts.runtime_threads, whole // c.jpack)
            # NT packs B (a transposing copy), a batch of slices keeps R6/R7's tasks, an unknown L3 is no evidence
            assert "R12" not in {d.rule for d in decide(shape, facts, layout="NT").decisions}
            assert "R12" not in {d.rule for d in decide(shape, facts, slices=2).decisions}
            assert "R12" not in {d.rule for d in decide(shape, dataclasses.replace(facts, l3_bytes=None)).decisions}
    # AVX2's 16 registers give M = 7 and 8 a tile of 2 rows (four row blocks): LLaMA-2-7B's weights stream there
    if facts.simd_lanes_fp32 == 8 and facts.arch == "x86_64":
        assert moved >= 6
        assert _streams(kernel_shape("mlp_reduce", 7, "llama2-7b"), facts)


def test_the_rule_follows_the_tile_not_the_cpu_name():
    """A pinned 2-row tile on a 32-register CPU leaves four row blocks at M = 7: the same rule streams there."""
    facts = PROFILES["avx512"]
    shape = kernel_shape("mlp_reduce", 7, "llama2-7b")
    pinned = decide(shape, facts, overrides={"mr": 2})
    assert pinned.config.tk == min(shape.K, GEMV_STREAMS) and not pinned.config.pack_b
    assert decide(shape, facts, overrides={"mr": 2, "tk": 64}).config.tk == 64  # a pinned knob stays pinned


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("M", [7, 8])
def test_a_streamed_kernel_is_exact(target, M):
    # an L3 of 2 MiB puts a 4 MB B beyond its share; a 2-row tile leaves several row blocks on any register count;
    # N = 1000 is no multiple of the vector, so R3's tail loops run too
    facts = dataclasses.replace(RUNNABLE[target], l3_bytes=2 * 1024 * 1024)
    shape = MatmulShape(M, 1024, 1000)
    c = decide(shape, facts, overrides={"mr": 2}).config
    assert c.tk == GEMV_STREAMS and not c.pack_b and c.tm == c.padded(shape)[0]
    kernel = build("rule_based[mr=2]", shape, facts=facts)
    a, b = make_inputs(shape, kind="int", seed=M)
    check = compare(kernel.run(a, b), a, b, kind="int")
    assert check.ok, f"rule_based[mr=2] {shape} on {target}: {check}"
