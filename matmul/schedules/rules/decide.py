"""The rules themselves: (shape, dtype, layout, hardware facts) -> a :class:`~.config.Plan`.

Every knob is set by one rule of :data:`~.config.RULES`, with the reason
recorded; vector width, register count, cache sizes and thread count come from
:class:`~matmul.core.hardware.HostFacts`, so nothing here is a constant for
one CPU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...core.hardware import HostFacts
from ...core.kernel import check_dtype, check_layout
from ...core.workloads import MatmulShape
from .apply import prepacks
from .config import (
    Decision,
    Plan,
    RuleConfig,
    RuleError,
    itemsize,
    l1_bytes,
    l2_bytes,
    prefetch_blocker,
    round_up,
    rule_knobs,
    vector_lanes,
    vector_registers,
)
from .constants import (
    FMA_CHAINS,
    GEMV_MAX_ROWS,
    GEMV_STREAMS,
    HALF_RATE_L2_TK_MIN_ROWS,
    HALF_RATE_UNPACKED_MAX_ROWS,
    INT_KNOBS,
    KPART_MIN_K,
    L1_SHARE_DEN,
    L1_SHARE_NUM,
    L2_PANEL_SHARE,
    MAX_PANELS_PER_TASK,
    NARROW_MAX_L3_SHARE,
    NARROW_MAX_ROWS,
    NARROW_ROW_BYTES,
    ORDERS,
    PAD_ROWS_MAX,
    PAGE_BYTES,
    STREAM_MAX_ROWS,
    TASKS_PER_THREAD,
    UNPACKED_MAX_ROWS,
    UNPADDED_MIN_ACC,
    UNROLL_STEP,
)


# --------------------------------------------------------------------------- the rules
def _register_tile(shape: MatmulShape, lanes: int, regs: int) -> tuple[int, int]:
    """R2: (mr, vectors across j) with the most accumulators that fit.

    A tile whose rows pad M by more than :data:`PAD_ROWS_MAX` of the padded rows loses to one
    that does not: at M = 7, six rows pad to 12 and 5/12 of the FMAs work on zeros. A tile that does not pad
    M at all wins over more accumulators as long as it keeps :data:`UNPADDED_MIN_ACC` of the registers
    and more than :data:`FMA_CHAINS` (padded rows cost a copy of A per call). On the GEMV path
    (R12), of tiles with as many accumulators, one of all M rows wins: B is streamed once, not once per
    row block (AVX2 at M = 4: 4 rows x 2 vectors read 1.11-1.35x 2 x 4, evidence/README.md).
    """
    best_key, best = None, (1, 1)
    for nv in range(1, 5):
        for mr in range(1, min(8, shape.M) + 1):  # never more rows than M has
            if mr * nv + nv + 1 > regs:
                continue
            padded = round_up(shape.M, mr)
            acc = min(mr * nv, regs - nv - 1)
            key = (shape.N % (nv * lanes) == 0 or nv == -(-shape.N // lanes),  # N < 4 vectors: the narrowest cover
                   (padded - shape.M) * PAD_ROWS_MAX.denominator <= padded * PAD_ROWS_MAX.numerator,
                   padded == shape.M and acc > FMA_CHAINS
                   and acc * UNPADDED_MIN_ACC.denominator >= regs * UNPADDED_MIN_ACC.numerator,
                   acc,
                   mr == shape.M <= GEMV_MAX_ROWS,  # R12's GEMV: of equal tiles, one row block streams B once
                   shape.M % mr == 0,
                   nv)
            if best_key is None or key > best_key:
                best_key, best = key, (mr, nv)
    return best


def _largest_dividing_multiple(total: int, unit: int, cap: int) -> int:
    """The largest multiple of ``unit`` that divides ``total`` and is <= cap (at least unit)."""
    best = unit
    for t in range(unit, min(cap, total) + 1, unit):
        if total % t == 0:
            best = t
    return best


@functools.lru_cache(maxsize=4096)
def set_pressure(row_bytes: int, slice_bytes: int, *, page: int = PAGE_BYTES, line: int = 64) -> float:
    """How unevenly one thread's column range of every row of B loads the cache sets: the most-read cache line
    of a page over the mean (1.0: even).

    An L2 is indexed by physical address, and within a page the physical address is the virtual one, so the
    page offsets a thread reads pick the sets it can use. A range of ``slice_bytes`` at the start of rows
    ``row_bytes`` apart covers the same offsets, or a few shifted copies of them, in every row: a 2 KiB half
    of 4 KiB rows reads only the first half of every page, so only half of the sets, and its data needs twice
    its size of cache to stay there. The pattern repeats every ``page / gcd(row_bytes, page)`` rows.
    """
    if row_bytes < 1 or slice_bytes < 1:
        raise ValueError(f"row and slice sizes must be positive, got {row_bytes} and {slice_bytes}")
    lines = max(1, page // line)
    counts = np.zeros(lines)
    for r in range(page // math.gcd(row_bytes, page)):
        start = r * row_bytes % page
        whole, rest = divmod(slice_bytes, page)
        counts += whole
        first, last = start // line, (start + rest + line - 1) // line  # lines [first, last) of the rest
        for i in range(first, last):
            counts[i % lines] += 1
    return float(counts.max() / counts.mean())


@functools.lru_cache(maxsize=4096)
def block_set_load(row_bytes: int, rows: int, chunk_bytes: int, period: int, line: int = 64) -> int:
    """The most cache lines of a block of ``rows`` rows (``chunk_bytes`` of each, rows ``row_bytes`` apart) that
    land in one set of a cache whose sets repeat every ``period`` bytes (size / ways).

    Sets are taken as indexed by the virtual address across the whole period, as they are within a huge page
    (NumPy's operands from 4 MiB; a model runtime's too, where it asks for them). Rows a multiple of
    ``period`` apart all fall on the same sets: 200 rows of A at K = 16384 floats (64 KiB apart), with a 2 MiB
    16-way L2 (period 128 KiB), put 100 lines in a set of 16.
    """
    if min(row_bytes, rows, chunk_bytes, period, line) < 1:
        raise ValueError(f"sizes must be positive, got rows {rows} of {chunk_bytes} B, {row_bytes} B apart, "
                         f"period {period} B, line {line} B")
    starts = np.arange(rows, dtype=np.int64) * row_bytes
    first, last = starts // line, (starts + chunk_bytes - 1) // line  # the lines each row's chunk touches
    lines = first[:, None] + np.arange(int((last - first).max()) + 1)[None, :]
    touched = np.unique(lines[lines <= last[:, None]])  # a line two rows share is one line
    counts = np.bincount(touched % max(1, period // line))
    return int(counts.max())


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Knob names and value types, checked before any shape is seen.

    Raises
    ------
    RuleError
        An unknown knob (the message lists them) or a value of the wrong kind.
    """
    overrides = dict(overrides)
    knobs = rule_knobs()
    unknown = set(overrides) - set(knobs)
    if unknown:
        raise RuleError(f"unknown rule knob(s) {', '.join(sorted(unknown))}; knobs are: {', '.join(knobs)}")
    for knob, value in overrides.items():
        if knob in INT_KNOBS and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                   or value < 1):
            raise RuleError(f"illegal rule config: {knob} must be a positive integer, got {value!r}")
        if knob == "order" and value not in ORDERS:
            raise RuleError(f"illegal rule config: order {value!r} is not one of {', '.join(ORDERS)}")
        if knob in ("pack_b", "prefetch") and not isinstance(value, bool):
            raise RuleError(f"illegal rule config: {knob} must be on or off, got {value!r}")
    return overrides


def decide(
    shape: MatmulShape,
    facts: HostFacts,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    overrides: Mapping[str, Any] | None = None,
    slices: int = 1,
    b_constant: bool = False,
) -> Plan:
    """Apply the rules to one shape. ``overrides`` pins knobs (for ablations).

    ``b_constant``: B is a weight the caller packs once (``rule_based_prepacked``, a model's layer): where the
    config takes it pre-packed and the FMAs issue at half rate, R4 sizes TK from L2 instead of L1 (as it does
    there from :data:`HALF_RATE_L2_TK_MIN_ROWS` rows of one matrix, B packed or not).

    ``slices`` is the number of independent matmuls of this shape the block computes (attention's heads):
    their loops join the parallel task loop, so R6 and R7 count their tasks too and cut N and M no
    finer than the threads need.

    Raises
    ------
    RuleError
        An override names an unknown knob or makes the config illegal.
    ValueError
        ``slices`` is not a positive integer.
    """
    check_layout(layout)
    if isinstance(slices, bool) or not isinstance(slices, (int, np.integer)) or slices < 1:
        raise ValueError(f"slices must be a positive integer, got {slices!r}")
    overrides = check_overrides(overrides or {})
    plan = _plan(shape, facts, check_dtype(dtype), layout, overrides, slices, tail_loops=True)
    c = plan.config
    if not c.tail(shape) and c.padded(shape)[1] != round_up(shape.N, c.jpack):
        # tiles sized for N's whole j-packs, but a pinned knob (kparts, tk, tn) pads K or leaves part of a tile,
        # so N is padded too, to a multiple of those tiles: size them for N padded to the j-pack instead
        plan = _plan(shape, facts, dtype, layout, overrides, slices, tail_loops=False)
    if facts.half_rate_fma and facts.l2_bytes and "tk" not in overrides:  # R4's panel in L2
        prepacked = b_constant and prepacks(plan.config, shape, batched=slices > 1)
        tall = slices == 1 and shape.M >= HALF_RATE_L2_TK_MIN_ROWS
        if prepacked or tall:
            why = "B is packed once" if prepacked else f"{shape.M} rows reuse each panel"
            streamed = _plan(shape, facts, dtype, layout, overrides, slices, tail_loops=True, tk_from_l2=why)
            same_pads = streamed.config.padded(shape) == plan.config.padded(shape)
            if same_pads and (not prepacked or prepacks(streamed.config, shape, batched=slices > 1)):
                plan = streamed
    return plan


def _plan(shape: MatmulShape, facts: HostFacts, dtype: str, layout: str, overrides: Mapping[str, Any],
          slices: int, *, tail_loops: bool, tk_from_l2: str = "") -> Plan:
    """:func:`decide`'s rules, the arguments checked. ``tail_loops``: size the column tiles for N's whole
    j-packs and leave the rest to R3's tail loops (:meth:`RuleConfig.tail`). ``tk_from_l2``: why R4's panel is
    within :data:`L2_PANEL_SHARE` of L2, not 3/4 of L1 (half-rate FMAs; empty: it is not)."""
    size = itemsize(dtype)
    decisions: list[Decision] = []

    def note(knob: str, value: Any, rule: str, why: str) -> Any:
        if knob in overrides:
            value = overrides[knob]
            rule, why = "user", f"overridden (rules chose differently: {why})"
        decisions.append(Decision(knob, value, rule, why))
        return value

    regs = vector_registers(facts)
    lanes = note("vector", vector_lanes(facts, dtype), "R1", f"{facts.simd_lanes_fp32} fp32 lanes, {size}-byte elements")
    mr0, nv0 = _register_tile(shape, lanes, regs)
    gemv = shape.M <= GEMV_MAX_ROWS and layout == "NN"  # NT would pack (copy) all of B per call
    b_bytes, l3 = shape.K * shape.N * size, facts.l3_bytes or 0
    in_l3 = b_bytes * NARROW_MAX_L3_SHARE.denominator <= l3 * NARROW_MAX_L3_SHARE.numerator
    if gemv and l3 and not in_l3 and nv0 > 1:  # R12: B streams from DRAM; one vector per row at a time
        jpack = note("jpack", lanes, "R12", f"GEMV: B's {b_bytes / 2**20:.0f} MiB exceed {NARROW_MAX_L3_SHARE} of "
                     f"L3, so B streams from memory: 1 vector across j, not {nv0}")
    else:
        jpack = note("jpack", nv0 * lanes, "R2", f"{nv0} vectors across j; {mr0 * nv0} accumulators of {regs} "
                     "registers")
    mr = note("mr", mr0, "R2", f"{mr0} rows, at most M")
    # R3 pads M and N to the register tile; the task tiles below divide the padded sizes.
    mp, np_ = round_up(shape.M, mr), round_up(shape.N, jpack)
    row_blocks = mp // mr
    # R12 beyond the GEMV: a few rows in several row blocks, B from memory: B streamed once, as the GEMV reads it
    streamed = (not gemv and layout == "NN" and slices == 1 and shape.M <= STREAM_MAX_ROWS and bool(l3)
                and not in_l3 and row_blocks >= 2)
    why_streamed = (f"{shape.M} rows, B's {b_bytes / 2**20:.0f} MiB exceed {NARROW_MAX_L3_SHARE} of L3 (it streams "
                    f"from memory)")
    streams, why_streams = gemv or streamed, "GEMV" if gemv else why_streamed  # R12 sets TK, TN and TM

    if tk_from_l2:
        cache, share = "L2", f"{L2_PANEL_SHARE} L2"
        tk_budget = max(lanes, l2_bytes(facts) * L2_PANEL_SHARE.numerator // L2_PANEL_SHARE.denominator
                        // (jpack * size))
    else:
        cache, share = "L1", "3/4 L1"
        tk_budget = max(lanes, l1_bytes(facts) * L1_SHARE_NUM // L1_SHARE_DEN // (jpack * size))
    tk_budget = 1 << (tk_budget.bit_length() - 1)  # power of two
    if streams:
        tk0 = min(shape.K, GEMV_STREAMS)
        why_tk = f"{why_streams}: {tk0} rows of B streamed side by side, each a sequential stream"
    elif shape.K <= tk_budget:
        tk0, why_tk = shape.K, f"all of K fits the {cache} budget of {tk_budget}"
    else:
        tk0 = _largest_dividing_multiple(shape.K, lanes, tk_budget)
        if tk0 * 2 <= tk_budget:  # no good divisor: pad K instead
            tk0 = tk_budget
            why_tk = f"{tk_budget} x {jpack} x {size} B <= {share}; K padded to a multiple"
        else:
            why_tk = f"largest divisor of K with {tk0} x {jpack} x {size} B <= {share}"
    if tk_from_l2:
        why_tk += f": {tk_from_l2} and this core's FMAs issue at half rate, so its panel streams from L2"
    tk = note("tk", tk0, "R12" if streams else "R4", why_tk)
    if layout == "NT":
        pack0, why_pack = True, "NT: B transposed into contiguous panels while packing"
    elif gemv:
        pack0, why_pack = False, "GEMV: B is read once per call; a packed copy would double its traffic"
    elif streamed:
        pack0, why_pack = False, (f"{why_streamed}: read once per call in place, each block of {tk} rows reused by "
                                  f"the {row_blocks} row blocks from L1")
    elif row_blocks >= 2 and facts.half_rate_fma and shape.M <= HALF_RATE_UNPACKED_MAX_ROWS:
        pack0, why_pack = False, (f"only {shape.M} rows reuse B, and this core's {lanes}-lane FMAs issue at half "
                                  "rate (measured): loads of B in place fit between them, the copy does not pay")
    elif row_blocks >= 2 and shape.M <= UNPACKED_MAX_ROWS and (shape.N * size) % PAGE_BYTES:
        pack0, why_pack = False, (f"only {shape.M} rows reuse B and its rows are not whole pages apart: the copy "
                                  "costs more than contiguous panels save")
    elif row_blocks >= 2:
        aliased = (shape.N * size) % PAGE_BYTES == 0
        pack0, why_pack = True, (f"each panel reused by {row_blocks} row blocks; contiguous, no set aliasing"
                                 + (f" (B's rows are {shape.N * size // PAGE_BYTES} pages apart)" if aliased else ""))
    else:
        pack0, why_pack = False, "one row block: a packed panel would be read once, the copy is pure cost"
    tail = shape.N % jpack if tail_loops and shape.K % tk == 0 else 0
    if tail and shape.N > jpack:  # R3: N is not padded (a padded copy is all of B again, packed or not)
        np_ = shape.N - tail
    else:
        tail = 0
    why_tail = f"; the last {tail} of N's columns by loops of their own (R3, B's N not padded)" if tail else ""

    l2 = l2_bytes(facts)
    threads = max(1, facts.runtime_threads)
    want = TASKS_PER_THREAD * threads
    split_k = None  # R12: the GEMV's threads take whole rows of B (K split) instead of column ranges
    if streams:  # one contiguous column range per thread, its C tile within half of L2
        tn0 = _largest_dividing_multiple(np_, jpack, max(jpack, np_ // threads))
        while mp * tn0 * size > l2 // 2 and tn0 > jpack:
            tn0 = _largest_dividing_multiple(np_, jpack, tn0 - jpack)
        why_tn = f"{why_streams}: {np_ // tn0} column range(s) of {tn0} for {threads} threads"
        share = shape.K * np_ * size // threads  # B's bytes per thread, either way
        row = (shape.N if tail else np_) * size  # bytes between rows of B as the kernel reads it
        pressure = set_pressure(row, tn0 * size)
        ranges = np_ // tn0
        uneven = ranges > 1 and slices * ranges % threads  # a thread idle part of the time, L2 or not (1.2-1.6x)
        if (gemv and threads > 1 and shape.K % (tk * threads) == 0 and mp * np_ * size <= l2 // 2
                and (uneven or ranges == threads and share <= l2 <= share * pressure)):
            split_k = threads
            why_tn = f"GEMV: whole rows per thread, K split in {threads}: "
            why_tn += (f"{ranges} column ranges would load the {threads} threads unevenly" if uneven else
                       f"a thread's {share // 1024} KiB of B fits L2 as one slab; as column ranges of "
                       f"{tn0 * size} B in rows {row} B apart (sets loaded {pressure:.2f}x unevenly) it needs "
                       f"{share * pressure / 1024:.0f} KiB of the {l2 // 1024} KiB")
            tn0 = np_
        tn = note("tn", tn0, "R12", why_tn + why_tail)
    else:
        panels, why_narrow = MAX_PANELS_PER_TASK, ""
        if overrides.get("pack_b", pack0) and shape.M <= NARROW_MAX_ROWS and in_l3:  # the copy weighs: narrow tasks
            narrow = max(1, NARROW_ROW_BYTES // (jpack * size))
            if narrow < panels:
                panels = narrow
                why_narrow = (f"; at most {NARROW_ROW_BYTES} B of each row of B per task, as B is packed for "
                              f"{shape.M} rows")
        tn0 = _largest_dividing_multiple(np_, jpack, jpack * panels)
        # Fewer columns per task before cutting M (cutting M repacks B per row block).
        while slices * (np_ // tn0) < want and tn0 > jpack:
            tn0 = _largest_dividing_multiple(np_, jpack, tn0 - jpack)
        tn = note("tn", tn0, "R6", f"{tn0 // jpack} j-packs; {np_ // tn0} column tasks"
                                   + (f" in each of {slices} slices" if slices > 1 else "") + why_narrow + why_tail)

    tm_cap = max(mr, (l2 // 2) // (tn * size) // mr * mr)
    tm0 = _largest_dividing_multiple(mp, mr, min(mp, tm_cap))
    while slices * (mp // tm0) * (np_ // tn) < want and tm0 > mr and not streams:
        tm0 = _largest_dividing_multiple(mp, mr, tm0 - mr)
    tasks0 = slices * (mp // tm0) * (np_ // tn)
    tm = note("tm", tm0, "R12" if streams else "R7", (f"{slices} slices x " if slices > 1 else "")
              + f"{mp // tm0} row block(s) x {np_ // tn} column tiles = {tasks0} tasks for {threads} threads")
    tasks = slices * -(-mp // tm) * -(-np_ // tn)  # a pinned TM or TN larger than M or N pads it (RuleConfig.padded)
    kparts0, rule_k, why_k = 1, "R13", f"{tasks} output tasks for {threads} threads: K stays whole"
    if split_k and "tn" not in overrides:
        kparts0, rule_k = split_k, "R12"
        why_k = f"GEMV: each thread sums over its own {shape.K // split_k} rows of B (R12's tn)"
    elif tasks < threads:  # narrow N and M too small to split: the threads may share K instead
        kparts0 = max(1, min(-(-threads // tasks), shape.K // KPART_MIN_K))
        while tail and shape.K % (tk * kparts0):  # R3's unpadded N needs K unpadded too
            kparts0 -= 1
        why_k = (f"only {tasks} output task(s) for {threads} threads: K in {kparts0} parts, summed at the end"
                 if kparts0 > 1 else f"only {tasks} output task(s) for {threads} threads, but K = {shape.K} is "
                 f"too short to split (a part needs {KPART_MIN_K} k iterations to pay for the sum)")
    kparts = note("kparts", kparts0, rule_k, why_k)
    unroll = note("unroll", math.gcd(UNROLL_STEP, tk), "R9", "ki unrolled by this step")
    writeback = note("writeback", lanes, "R10", "write-back stores one vector at a time")
    order0, why_order = "jfirst", "B micro-panel reused from L1 by every row block"
    # A's task block is read once per j-pack: does L2 keep it between them?
    if not streams and tn // jpack > 1 and facts.l2_bytes and facts.l2_ways:
        ways = facts.l2_ways
        k_row = round_up(shape.K, tk * kparts) * size  # bytes between A's rows, K padded as R3 pads it
        load = block_set_load(k_row, tm, tk * size, max(1, l2 // ways))
        if load > ways:
            order0 = "ifirst"
            why_order = (f"A's task block ({tm} rows of {tk}, {k_row} B apart) puts {load} lines in one L2 set of "
                         f"{ways} ways, so it would not stay in L2 for the next of the {tn // jpack} j-packs: each "
                         "row block takes them all while its rows are in L1")
    order = note("order", order0, "R8", why_order)
    pack_b = note("pack_b", pack0, "R5", why_pack)
    config = RuleConfig(tm=tm, tn=tn, tk=tk, mr=mr, jpack=jpack, vector=lanes, unroll=unroll,
                        writeback=writeback, order=order, pack_b=bool(pack_b), kparts=kparts).check()
    blocker = prefetch_blocker(config, shape, layout, dtype, slices > 1, facts)
    prefetch = note("prefetch", not blocker, "R14", f"not here: {blocker}" if blocker else
                    f"B's rows are {shape.N * size} B apart (a page or more) and B comes from memory: each row tile "
                    "prefetches a share of the next B block")
    if prefetch and (illegal := prefetch_blocker(config, shape, layout, dtype, slices > 1)):
        raise RuleError(f"illegal rule config: prefetch=on, but R14's schedule cannot prefetch here: {illegal}")
    pinned = tuple(f"{k}={v}" for k, v in overrides.items())
    return Plan(shape, dtype, layout, facts, config, tuple(decisions), pinned)


__all__ = ["block_set_load", "check_overrides", "decide", "set_pressure"]
