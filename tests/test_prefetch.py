"""R14: B's next block prefetched in software where B is read in place, its rows lie a page or more apart and it
comes from memory.

Decisions are checked over several facts profiles whatever the host; the prefetch indices are checked
exhaustively with NumPy's floor division (a prefetch never faults, so a run cannot catch one out of bounds);
kernels that prefetch are built and checked against NumPy on every target this host runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from matmul import MatmulShape
from matmul.core.registry import schedule, variant_decisions
from matmul.core.workloads import KERNELS, MODELS, kernel_shape
from matmul.measure.candidates import prepare
from matmul.schedules.rules import (
    PAGE_BYTES,
    PREFETCH_MIN_L3_SHARE,
    PREFETCH_MIN_TILES,
    RULES,
    RuleConfig,
    RuleError,
    apply_config,
    decide,
    prefetch_blocker,
)
from matmul.schedules.rules.apply import prefetch_index, prefetch_sizes
from matmul.schedules.rules.config import l1_bytes
from matmul.schedules.template import config_name

from .profiles import PROFILES, RUNNABLE

M_VALUES = (1, 7, 16, 32, 64, 77, 96, 128, 192, 256, 384)


def _shapes():
    seen = set()
    for model in MODELS:
        for kernel in KERNELS:
            for M in M_VALUES:
                shape = kernel_shape(kernel, M, model)
                if (shape.M, shape.K, shape.N) not in seen:
                    seen.add((shape.M, shape.K, shape.N))
                    yield shape


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_r14_prefetches_exactly_where_b_is_read_in_place_rows_a_page_apart_from_memory(profile):
    """Every model row at several M: a prefetching plan reads B in place, unsplit, jfirst, rows a page or more
    apart, B beyond its share of L3, the block within L1 and enough row tiles; every other plan names what stops
    it. Both kinds occur on every profile, and the variants' decisions say what the kernel does."""
    facts = PROFILES[profile]
    kinds, whys = set(), set()
    for shape in _shapes():
        plan = decide(shape, facts)
        c = plan.config
        blocker = prefetch_blocker(c, shape, facts=facts)
        decision = next(d for d in plan.decisions if d.knob == "prefetch")
        assert decision.rule == "R14" and plan.prefetch is (not blocker) is decision.value
        if blocker:
            assert decision.why == f"not here: {blocker}"
        else:
            assert not c.pack_b and c.kparts == 1 and c.order == "jfirst", (shape, c)
            assert shape.N * 4 >= PAGE_BYTES and c.tm // c.mr >= PREFETCH_MIN_TILES
            assert c.tiled(shape)[1:] == (shape.N, shape.K)
            assert shape.K * shape.N * 4 > facts.l3_bytes * PREFETCH_MIN_L3_SHARE
            assert c.tk * c.jpack * 4 <= l1_bytes(facts)
            assert "prefetches a share of the next B block" in decision.why
        kinds.add(not blocker)
        whys.add(blocker.split(" ", 1)[-1] if "row tiles" in blocker else blocker)
        for variant in ("rule_based", "ml_guided"):
            d = variant_decisions(variant, shape, facts=facts)
            if variant == "rule_based" or d["tm"] == c.tm and d["tk"] == c.tk:  # the model may pick another
                assert d["prefetch_b"] is (not prefetch_blocker(RuleConfig(**{k: d[k] for k in c.as_dict()}),
                                                                shape, facts=facts)), (variant, shape)
    # R5 reads B in place past UNPACKED_MAX_ROWS rows only where the FMAs issue at half rate; below, the register
    # tiles leave too few row tiles. So R14 acts on half-rate cores only, packing or short tiles stop it elsewhere.
    assert (True in kinds) is bool(facts.half_rate_fma), (profile, whys)
    assert "B is packed into panels" in whys and f"row tiles, under {PREFETCH_MIN_TILES}" in whys


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_what_stops_r14(profile):
    """Each blocker on its own: rows under a page, NT, a batched block, packed B, a split K, another order, too
    few row tiles, B within its share of L3, a block over L1; pinned off, and pinned on where the schedule
    cannot (an error) or where only the machine's sizes stand against it (allowed: evidence pins it so)."""
    facts = dataclasses.replace(PROFILES[profile], runtime_threads=2, num_cores=2, half_rate_fma=True)
    shape = next(s for s in _shapes() if decide(s, facts).prefetch)  # half rate: B read in place (R5), R14 acts
    c = decide(shape, facts).config
    assert not prefetch_blocker(c, shape, facts=facts)
    narrow = MatmulShape(shape.M, shape.K, (PAGE_BYTES // 4 - 1) // c.tn * c.tn)  # rows under a page, whole tiles
    assert "under a page" in prefetch_blocker(c, narrow)
    assert prefetch_blocker(c, shape, layout="NT").startswith("NT")
    assert prefetch_blocker(c, shape, batched=True) == "a batched block"
    assert prefetch_blocker(dataclasses.replace(c, pack_b=True), shape) == "B is packed into panels"
    assert prefetch_blocker(dataclasses.replace(c, order="ifirst"), shape) == "order ifirst"
    assert prefetch_blocker(dataclasses.replace(c, kparts=2), shape) == "K is split"
    few = dataclasses.replace(c, tm=c.mr * (PREFETCH_MIN_TILES - 1))
    assert prefetch_blocker(few, shape) == f"{PREFETCH_MIN_TILES - 1} row tiles, under {PREFETCH_MIN_TILES}"
    big_l3 = dataclasses.replace(facts, l3_bytes=shape.K * shape.N * 4 * PREFETCH_MIN_L3_SHARE.denominator)
    assert "of L3: its lines come from cache" in prefetch_blocker(c, shape, facts=big_l3)
    small_l1 = dataclasses.replace(facts, l1d_bytes=c.tk * c.jpack * 4 // 2)
    assert "exceeds L1" in prefetch_blocker(c, shape, facts=small_l1)
    off = decide(shape, facts, overrides={"prefetch": False})
    assert not off.prefetch and off.config == c and "overridden" in next(
        d.why for d in off.decisions if d.knob == "prefetch")
    assert variant_decisions("rule_based[prefetch=off]", shape, facts=facts)["prefetch_b"] is False
    assert decide(shape, big_l3, overrides={"prefetch": True}).prefetch  # the machine's sizes may be overruled
    packed = next(s for s in _shapes() if decide(s, facts).config.pack_b)
    with pytest.raises(RuleError, match="cannot prefetch here: B is packed"):
        decide(packed, facts, overrides={"prefetch": True})
    from tvm.s_tir import Schedule

    from matmul.core.kernel import matmul_module
    with pytest.raises(RuleError, match="R14 cannot prefetch B here: B is packed"):
        apply_config(Schedule(matmul_module(packed)), decide(packed, facts).config, packed, prefetch=True)
    assert "R14" in RULES


def test_prefetch_is_no_config_knob():
    """A plan's choice, not the config's: template names and records are as before R14, and ``prefetch=off``
    shows in a variant name only."""
    shape = kernel_shape("mlp_expand", 128)
    plan = decide(shape, PROFILES["avx512"])
    assert "prefetch" not in plan.config.as_dict() and "prefetch" not in config_name(plan.config)
    with pytest.raises(RuleError, match="prefetch"):
        decide(shape, PROFILES["avx512"], overrides={"prefetch": 1})


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_prefetch_lands_in_b_and_every_line_of_the_next_blocks_is_fetched_once(profile):
    """All loop values at once (NumPy): each guarded prefetch reads an element of B, and a task fetches every
    cache line of each of its blocks but the first, and no other, the lines of block ``b`` during block ``b - 1``."""
    # half rate, 2 threads: the profile's register tiles and caches with B read in place (R5) and tall tiles (R7)
    facts = dataclasses.replace(PROFILES[profile], runtime_threads=2, num_cores=2, half_rate_fma=True)
    checked = 0
    for shape in _shapes():
        c = decide(shape, facts).config
        if prefetch_blocker(c, shape) or shape.K * shape.N > 2**22:  # each config the schedule can prefetch for
            continue
        z = prefetch_sizes(c, shape, 4)
        tasks = c.padded(shape)[0] // c.tm * z["tasks_n"]
        t, ko, jm, im, p = np.meshgrid(np.arange(tasks), np.arange(shape.K // c.tk), np.arange(z["j_packs"]),
                                       np.arange(z["tiles"]), np.arange(z["share"]), indexing="ij")
        row, col, line, nxt = prefetch_index(c, z, t, ko, jm, im, p, np.floor_divide, np.mod)
        on = (line < z["lines"]) & (nxt < z["blocks"])
        row, col, task, nxt, now = row[on], col[on], t[on], nxt[on], (ko * z["j_packs"] + jm)[on]
        assert row.min() >= 0 and row.max() < shape.K and col.min() >= 0 and col.max() < shape.N, (profile, shape)
        assert np.all(nxt == now + 1)
        # the block a line lies in, from its address: it must be the block the step prefetches for
        jt = task % z["tasks_n"]
        assert np.all(col // c.tn == jt)
        assert np.all(row // c.tk * z["j_packs"] + (col - jt * c.tn) // c.jpack == nxt)
        per_line = z["per_line"]
        fetched = np.unique(np.stack([task, row, col // per_line], axis=1), axis=0)
        # the lines blocks 1.. of each task touch: TK rows, each its j-pack's bytes (a j-pack narrower than a line,
        # or not a whole number of them, shares a line with its neighbour: fetched for both, harmless)
        bt, b, r = np.meshgrid(np.arange(tasks), np.arange(1, z["blocks"]), np.arange(c.tk), indexing="ij")
        start = bt % z["tasks_n"] * c.tn + b % z["j_packs"] * c.jpack
        rows = b // z["j_packs"] * c.tk + r
        last = (start + c.jpack - 1) // per_line
        spans = [np.stack([bt, rows, start // per_line + n], axis=-1).reshape(-1, 3)[
            (start // per_line + n <= last).reshape(-1)] for n in range(z["row_lines"] + 1)]
        touched = np.unique(np.concatenate(spans), axis=0)
        assert np.array_equal(fetched, touched), (profile, shape, len(fetched), len(touched))
        assert len(task) == tasks * (z["blocks"] - 1) * z["lines"]  # row_lines prefetches per row, no more
        checked += 1
    assert checked, profile


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize(("model", "kernel", "M"), [("bert-base", "mlp_expand", 77), ("bert-large", "mlp_reduce", 64),
                                                   ("vit-huge", "mlp_reduce", 64)])
def test_prefetching_kernels_compute_the_product(target, model, kernel, M):
    """Built for each target this host runs (a padded M among them): the TIR holds the prefetch loop, the
    assembly a prefetch instruction, and the result matches NumPy (``prepare`` checks it). Where the rules pack
    B on that target (full-rate FMAs), B in place and the prefetch are pinned, so every target runs one."""
    facts = RUNNABLE[target]
    shape = kernel_shape(kernel, M, model)
    plan = decide(shape, facts)
    name = "rule_based" if plan.prefetch else "rule_based[pack_b=off,order=jfirst,prefetch=on]"
    if not plan.prefetch:
        assert plan.config.pack_b, prefetch_blocker(plan.config, shape, facts=facts)  # what R14 waits for
    off = name.replace("prefetch=on", "prefetch=off") if "[" in name else "rule_based[prefetch=off]"
    assert schedule(name, shape, facts=facts).mod.script().count("T.prefetch(") == 1
    assert "T.prefetch(" not in schedule(off, shape, facts=facts).mod.script()
    cand = prepare(name, shape, facts=facts, fresh=True)
    assert cand.decisions["prefetch_b"] is True
    asm = cand.kernel.source("asm")
    assert ("prefetcht0" in asm) if facts.arch == "x86_64" else ("prfm" in asm)


def test_a_config_off_the_rules_is_judged_by_the_same_rule():
    """Any legal config goes through the same test (the template's and the learned model's picks too)."""
    facts = PROFILES["avx512"]
    shape = kernel_shape("mlp_expand", 64)
    base = decide(shape, facts).config
    cfg = RuleConfig(tm=shape.M, tn=base.tn, tk=base.tk // 2, mr=base.mr, jpack=base.jpack, vector=base.vector,
                     writeback=base.writeback, pack_b=False)
    assert not prefetch_blocker(cfg, shape, facts=facts)
    whole_k = dataclasses.replace(cfg, tk=shape.K)
    assert shape.K * cfg.jpack * 4 > l1_bytes(facts)
    assert prefetch_blocker(whole_k, shape, facts=facts).endswith("exceeds L1")
