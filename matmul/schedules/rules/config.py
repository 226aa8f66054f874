"""The hardware-aware rule-based schedule: no tuning, every choice explained.

Two functions do all the work (:mod:`.decide`, :mod:`.apply`):

* :func:`decide` maps (shape, dtype, layout, hardware facts) to a
  :class:`RuleConfig` (TM, TN, TK, register rows, j-pack, unroll, write-back
  width, loop order, B packing) and records, for every knob, the rule that set
  it and why. Vector width, register count, cache sizes and thread count come
  from :class:`~matmul.core.hardware.HostFacts`; nothing here is a constant for one
  CPU.
* :func:`apply_config` turns any legal config into a TIR schedule.

The schedule is a register-blocked GEMM in the GotoBLAS mould:

``task (TM x TN, parallel) -> ko (TK) -> pack B[ko] -> jo (j-pack) -> io (mr)
-> ki -> ir (mr rows, unrolled) -> jv (j-pack, vectorised)``

so ``mr x j-pack`` accumulators live in vector registers across the whole
``TK`` loop, the packed ``TK x j-pack`` panel of B stays in L1 while every row
block of the task streams past it, and the ``TM x TN`` output tile is written
back once, vectorised. Shapes that the register tile does not divide are padded
(``pad_einsum``) so the hot loop never carries a predicate; the padding is
zeros, so results are exact.

:data:`RULES` names each rule; ``python -m matmul describe`` prints a plan,
and ``python -m matmul evidence`` regenerates the paired measurements behind
the rules (see ``evidence/README.md``).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import numpy as np

from ...core.hardware import HostFacts
from ...core.kernel import check_dtype
from ...core.workloads import MatmulShape

#: The rules, by id. ``describe`` prints the id next to each decision.
RULES: dict[str, str] = {
    "R1": "vector width = the target's SIMD lanes for the element type",
    "R2": "register tile: the most accumulators (mr x j-pack / lanes) that leave one register per B vector "
          "and one for the A broadcast, with mr <= M, preferring tiles that divide N (or, for N narrower than "
          "the widest tile, the narrowest tile that covers it), then tiles that pad M by "
          "at most 1/8 of the padded rows, then tiles that do not pad M if their accumulators fill at least half "
          "of the registers and outnumber the 8 chains two FMA pipes need, then (GEMV, M <= 4) a tile of all M "
          "rows, then M's divisors",
    "R3": "pad M, N (and K) up to the tiles with zeros rather than predicate the hot loop; the pad copies run "
          "in parallel over batch, heads and rows; where only M grew, the write-back stores C's own rows (no copy "
          "out). Where K needs no padding, N is not padded: the columns past "
          "the last whole j-pack get loops of their own that read B in place (in power-of-two widths, K split as "
          "the tiles split it), because padding N copies all of B on every call, packed or not",
    "R4": "TK: the packed B micro-panel (TK x j-pack) fills at most 3/4 of L1 (the rest: A rows, stack); where "
          "the FMAs issue at half rate and B is a weight packed once, or at least 192 rows reuse it, at most 1/8 "
          "of L2 (the panel streams from L2)",
    "R5": "pack B into j-pack-wide panels per (task, TK) block when at least two row blocks reuse them and "
          "either more than 16 rows do or B's rows lie whole pages apart (or the layout is NT): contiguous, no "
          "cache-set aliasing; where the widest FMAs issue at half rate (measured), up to 192 rows read B in "
          "place; NT transposes by square tiles, each row "
          "of a tile one vector load along K. A constant B (a model's weight) is packed into the same panels "
          "once, when loaded, and read so on every call",
    "R6": "TN: up to 4 j-packs, so a task's packed B block stays within L2 alongside its C tile; where B is "
          "packed, at most 128 rows reuse it and it fits half of L3, at most 384 bytes of each row of B "
          "(measured: the copy weighs there); fewer when the tasks (a batched block's slices included) would "
          "not give 4 per thread",
    "R7": "TM: the whole of M per task (B is packed once) unless that leaves fewer than 4 tasks per "
          "thread (a batched block's slices count); the C tile must fit in half of L2",
    "R8": "loop order task > ko > jo > io > ki > ir > jv: the B micro-panel is reused from L1 by every row block; "
          "but where the task's block of A (TM rows of TK) cannot stay in L2 while the task's j-packs take it in "
          "turn (more of its lines share one L2 set than the L2 has ways: rows a large power of two of bytes "
          "apart), io before jo: each row block takes every j-pack while its rows are in L1",
    "R9": "unroll the ki loop by a small step; LLVM unrolls the register tile itself",
    "R10": "accumulate the task tile in a local buffer (cache_write), zero it outside the k loops "
           "(decompose_reduction), and write it back once, vectorised",
    "R11": "parallelise the fused task loop over the runtime threads",
    "R12": "GEMV path (M <= 4 rows, NN): B is streamed once per call; each thread owns a contiguous range of "
           "N / threads columns (TN) and reads 8 rows of B side by side (TK), one sequential stream each; where "
           "a thread's share of B fits L2 as one slab but its column ranges, which load the cache sets unevenly, "
           "would not, each thread takes whole rows of B instead (K split, KPARTS = threads); where B exceeds half "
           "of L3 (it streams from memory), one vector across j (JPACK) instead of R2's several",
    "R13": "split K between the threads (each a contiguous part of K into its own partial C, then a vectorised "
           "parallel sum) when the output has fewer tasks than threads (narrow N, M too small to split) and "
           "each part keeps at least 2048 k iterations",
    "R14": "where B is read in place (NN, not packed), its rows lie at least a page apart and it exceeds 1/5 of L3, "
           "prefetch into L1 the B block (TK rows of one j-pack, no larger than L1) the next step reads, a share "
           "at the head of each of at least 8 row tiles: the hardware prefetchers stop at page boundaries, so "
           "without it the first line of every row of a new block misses, to memory",
}

#: Loop orders :func:`apply_config` knows. ``jfirst`` is R8's; ``ifirst``
#: swaps the two micro-tile loops (each row block sweeps all of the B block).
ORDERS = ("jfirst", "ifirst")
#: Aim for at least this many parallel tasks per runtime thread (R7).
TASKS_PER_THREAD = 4
#: Upper bound on micro-panels per task column tile (R6).
MAX_PANELS_PER_TASK = 4
#: R6: where B is packed and each packed panel feeds at most this many rows of A, the copy is a large
#: share of the time, and a task takes at most :data:`NARROW_ROW_BYTES` of each row of B. On the 2-core Emerald
#: Rapids host (AVX-512: j-packs of 48 and 64 floats, 192 and 256 B), one j-pack of 64 or two of 48 read
#: 1.13-1.28x faster than the four of before (768 and 1024 B of a row) at M = 16, 1.05-1.18x at M = 32-96,
#: 1.03-1.05x at 128 and 0.98-1.03x at 160-200 (so not there), never slower at M <= 128 where B fits L3
#: (:data:`NARROW_MAX_L3_SHARE`)
#: (evidence/README.md, "Narrow tasks where packing weighs"). No mechanism is known (one j-pack of 48, 192 B,
#: reads no faster; nor does packing each j-pack just before its use), so the bound is a measured one. Four
#: j-packs of AVX2's 24 floats are 384 B: Zen 3's 24-wide tiles are as before.
NARROW_MAX_ROWS = 128
#: R6: bytes of each row of B a task takes where packing weighs (:data:`NARROW_MAX_ROWS`); at least one j-pack.
NARROW_ROW_BYTES = 384
#: R6: the narrow tasks only where B fits in this share of L3. Where B streams from DRAM, a strip of 256 B of
#: each row is too short: ALBERT-xxlarge's 268 MB MLP weights (rows 64 KiB apart) read 0.52x, 0.69x and 0.81x
#: with it at 7 x 4096 x 16384, 77 x 4096 x 16384 and 77 x 16384 x 4096 (evidence/README.md). R12 reads the same
#: share: a GEMV whose B exceeds it streams B from memory one vector across j, which on Zen 4 read 1.09-1.57x
#: R2's four on weights of 25-256 MiB and 0.91-1.03x on 1-16 MiB ones, which stay in L3 (evidence/README.md).
NARROW_MAX_L3_SHARE = Fraction(1, 2)
#: Share of L1 the packed B micro-panel may fill (R4). Half of L1 (TK=128 on
#: AVX2) and 3/4 (TK=256) differ by 3-4% in two paired runs, in favour of 3/4.
L1_SHARE_NUM, L1_SHARE_DEN = 3, 4
#: R2: the register tile may pad M by at most this share of the padded rows
#: (one row in eight). Beyond it a tile with fewer accumulators and less
#: padding wins: at M = 7 on AVX-512 six rows pad to 12 and waste 5/12 of the
#: FMAs (evidence/README.md, "Padding in the register tile").
PAD_ROWS_MAX = Fraction(1, 8)
#: R2: a register tile that leaves M unpadded wins over one with more accumulators that pads it, if it keeps
#: at least this share of the vector registers as accumulators. Padded rows cost a parallel copy of A per call
#: (and a pass over the rows): at 128 x 512 x 512 on Emerald Rapids, 6 x 4 vectors padding M to 132 read 1.15x
#: slower than 4 x 4 at M = 128 (both storing C from the write-back), while at M = 132 (no padding) the two
#: tiles ran alike (1.02x), as at M = 384 (1.00x) (evidence/README.md, "Padded rows").
UNPADDED_MIN_ACC = Fraction(1, 2)
#: R2: independent accumulator chains two FMA pipes of 4-cycle latency keep busy (every x86 core this suite has
#: met: Zen 3-5, Rocket Lake, Emerald Rapids). A tile that leaves M unpadded must also have more than these: with
#: exactly 8 nothing hides a late load. For the AVX2 target on the Emerald Rapids host, 2 rows x 4 vectors
#: (8 accumulators) read 0.90-0.93x the 6 x 2 (12) that pads M = 64 and 128, while 5 x 2 (10) read 0.99x it at
#: M = 200 and 3 x 3 (9) 1.01-1.04x 4 x 3 at M = 33.
FMA_CHAINS = 8
#: Knobs that take positive integers.
INT_KNOBS = ("tm", "tn", "tk", "mr", "jpack", "vector", "writeback", "unroll", "kparts")
#: Default explicit unroll step of the ki loop (R9).
UNROLL_STEP = 4
#: R12: up to this many rows a matmul takes the GEMV path. Each B element
#: then feeds at most this many FMAs, so memory bounds it: on the 2-core
#: AVX-512 host LLaMA-2-7B's QKV ran 1.9-2.1x faster than the GEMM tiles at
#: M = 1, 2 and 4, and no faster at M = 8 (evidence/README.md).
GEMV_MAX_ROWS = 4
#: R12: rows of B read side by side (TK) in the GEMV path: one sequential
#: stream each for the hardware prefetcher, 8 of the 16-32 streams x86 cores
#: track. 8 beat 4 and 32 by 7-9% on a DRAM-bound GEMV.
GEMV_STREAMS = 8
#: R13: the fewest k iterations a part of a split K loop must keep. A split
#: costs a second parallel region and a pass over the partial sums, a few
#: microseconds on 2 cores: at M = 1 and 4, N = 16 and 64, K = 768-6144 on the
#: AVX-512 host, splitting K in two read 0.44-0.91x when each part had at most
#: 1536 iterations and 1.10-1.49x from 3072 up (evidence/README.md, R13).
KPART_MIN_K = 2048
#: R5: B reused by at most this many rows is read in place (not packed) unless its rows lie a whole number of
#: pages apart. In the shipped sweeps, not packing at M = 16 read 1.24-1.63x faster at qkv and 1.01-1.30x at
#: mlp_reduce on all four profiles (Zen 3, Rocket Lake, Zen 4, Emerald Rapids); at M = 32 and 64 the four
#: split (0.67-1.30x).
UNPACKED_MAX_ROWS = 16
#: R5 where the widest FMAs issue at half rate (``HostFacts.half_rate_fma``: Zen 4's AVX-512 on 256-bit units):
#: B reused by at most this many rows is read in place, its rows whole pages apart or not. Each FMA there takes
#: twice the cycles, which the loads of a B read in place fill. On Zen 4, B in place against R5's packing, side
#: by side with an A/A copy (evidence/znver4-2c-simd16-t2/r5-unpacked/ and r5-half-rate/): 1.06-1.44x at
#: M = 16-64 (mlp_expand at M = 32 level), 1.03-1.14x at M = 96-192 (7 of 9 intervals above 1), level at 256 and
#: 384 (0.98-1.03x); on the three profiles with full-rate FMAs packing led from M = 32 (0.45-1.02x in place).
HALF_RATE_UNPACKED_MAX_ROWS = 192
#: R4 where the FMAs issue at half rate and B is a constant packed once (a model's weight), or from
#: :data:`HALF_RATE_L2_TK_MIN_ROWS` rows: the TK x j-pack panel within this share of L2 instead of 3/4 of L1 (TK 384-512 where L1 gives 64-128). On Zen 4, NT with weights
#: packed once, TK = 384 read 1.02-1.07x the L1-sized TK on 8 BERT shapes at M = 32-384 and 512-1024 the same
#: again where they divide K (evidence/znver4-2c-simd16-t2/prepacked-tk/).
L2_PANEL_SHARE = Fraction(1, 8)
#: R4 where the FMAs issue at half rate: from this many rows of A (one matrix, not a batch of slices), TK comes
#: from :data:`L2_PANEL_SHARE` of L2 too, B packed per call or read in place. On Zen 4, TK = 320-512 against
#: the L1-sized 64-128, side by side with an A/A copy, on the 9 BERT shapes at M = 192-384 and the 23 model rows
#: at M = 200 it moves: 31 of 32 faster, 0.99-1.08x, 22 intervals above 1, none below. At M = 96 and 128 four runs
#: read 0.92-1.07x (qkv at 96 above 1 in each, the other shapes on both sides), so not there
#: (evidence/znver4-2c-simd16-t2/tall-tk/).
HALF_RATE_L2_TK_MIN_ROWS = 192
#: R5: rows of B this many bytes apart (or a multiple) keep their packing at any M: the prefetchers stop at a
#: page, and on a virtually indexed L1 of one page per way every row lands in the same sets. mlp_expand's
#: 3072-float rows (3 pages) read 0.77x and 0.89x unpacked at M = 16 on Zen 3 and Emerald Rapids.
PAGE_BYTES = 4096
#: Bytes of a cache line: the stride of R14's prefetches (64 on every x86-64 core and most Arm cores).
LINE_BYTES = 64
#: R14 spreads a block's prefetches over its row tiles and needs at least this many of them. Measured on Zen 4
#: (``evidence/README.md``): BERT-base's MLP expand read 0.91-0.94x the time with the prefetch at M = 64-128
#: (8-16 tiles), about the same at M = 32 (4) and 1.02x slower at M = 16 (2 tiles, 192 prefetches each).
PREFETCH_MIN_TILES = 8
#: R14 prefetches only a B larger than this share of L3 (from memory, not cache). On Zen 4 (32 MiB L3) B of 9-256
#: MiB read 0.92-1.17x, geomean 1.075x, faster with the prefetch, B of 4-6.2 MiB (BERT-large's QKV, t5-small's MLP
#: expand, ViT-huge's QKV) 0.95-1.02x, geomean 0.987x (``evidence/znver4-2c-simd16-t2/prefetch/domain.csv``), and
#: B of 6.5-8 MiB (12 shapes of no model, two runs) geomean 1.026x and 1.007x, 11 of 24 intervals above 1 and none
#: below (``prefetch/gap.csv``, ``gap-repeat.csv``): so from a fifth (6.4 MiB there), not a quarter.
PREFETCH_MIN_L3_SHARE = Fraction(1, 5)


class RuleError(ValueError):
    """A rule config is illegal for the shape it is applied to."""


@dataclasses.dataclass(frozen=True)
class RuleConfig:
    """Concrete schedule knobs; :meth:`check` says whether they are legal.

    Attributes
    ----------
    tm, tn : int
        Rows and columns of one parallel task's output tile.
    tk : int
        Reduction tile (the packed B block is ``tk x tn``).
    mr : int
        Register-tile rows.
    jpack : int
        Register-tile columns, a multiple of ``vector``.
    vector : int
        SIMD lanes of the element type.
    unroll : int
        Explicit unroll step of the ki loop (1: none).
    writeback : int
        Vector width of the C write-back, a multiple of ``vector`` dividing ``tn``.
    order : str
        One of :data:`ORDERS`.
    pack_b : bool
        Copy each ``tk x tn`` block of B into j-pack panels before use.
    kparts : int
        Parts K is split into, one partial output each, summed at the end (R13; 1: no split). The parts
        join the parallel task loop.
    """

    tm: int
    tn: int
    tk: int
    mr: int
    jpack: int
    vector: int
    writeback: int
    unroll: int = UNROLL_STEP
    order: str = "jfirst"
    pack_b: bool = True
    kparts: int = 1

    def padded(self, shape: MatmulShape) -> tuple[int, int, int]:
        """M, N, K after R3's padding: multiples of tm, tn and tk x kparts; N as it is where :meth:`tail`."""
        n = shape.N if self.tail(shape) else round_up(shape.N, self.tn)
        return round_up(shape.M, self.tm), n, round_up(shape.K, self.tk * self.kparts)

    def tail(self, shape: MatmulShape) -> int:
        """Columns of N past the last whole j-pack that R3 computes in place, by loops of their own (0: none).

        Wherever the whole j-packs split into whole ``tn`` tiles and K needs no padding (M may: that pads A and
        C, not B). Padding N instead copies all of B on every call: a second pass over the operand a GEMV
        streams once (0.14-0.47x NumPy at M = 1, K = 1024, N = 1000; 2.8-7.1x slower than the tail on twelve
        head shapes), and one more pass before R5 packs it (vocabulary heads at M = 33-384, 1.20-1.63x slower
        than the tail; ``evidence/README.md``).
        """
        whole = shape.N - shape.N % self.jpack
        if whole in (0, shape.N) or whole % self.tn or shape.K % (self.tk * self.kparts):
            return 0
        return shape.N - whole

    def tiled(self, shape: MatmulShape) -> tuple[int, int, int]:
        """M, N, K the tiles cover: :meth:`padded`, less R3's :meth:`tail` columns."""
        mp, np_, kp = self.padded(shape)
        return mp, np_ - self.tail(shape), kp

    def tasks(self, shape: MatmulShape) -> int:
        mp, np_, _ = self.tiled(shape)
        return (mp // self.tm) * (np_ // self.tn) * self.kparts

    def check(self) -> RuleConfig:
        """Raise :class:`RuleError` naming every broken constraint."""
        problems = []
        for name in INT_KNOBS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise RuleError("illegal rule config: " + "; ".join(problems))
        if self.jpack % self.vector:
            problems.append(f"jpack {self.jpack} is not a multiple of the vector width {self.vector}")
        if self.tn % self.jpack:
            problems.append(f"tn {self.tn} is not a multiple of jpack {self.jpack}")
        if self.tm % self.mr:
            problems.append(f"tm {self.tm} is not a multiple of mr {self.mr}")
        if self.tk % self.unroll:
            problems.append(f"unroll {self.unroll} does not divide tk {self.tk}")
        if self.writeback % self.vector or self.tn % self.writeback:
            problems.append(f"writeback {self.writeback} must be a multiple of the vector width {self.vector} "
                            f"dividing tn {self.tn}")
        if self.order not in ORDERS:
            problems.append(f"order {self.order!r} is not one of {', '.join(ORDERS)}")
        if problems:
            raise RuleError("illegal rule config: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def rule_knobs() -> list[str]:
    """What an override may pin: the config's knobs and R14's ``prefetch`` (on or off), which is the plan's, not
    the config's (:attr:`Plan.prefetch`)."""
    return [f.name for f in dataclasses.fields(RuleConfig)] + ["prefetch"]


def prefetch_blocker(config: RuleConfig, shape: MatmulShape, layout: str = "NN", dtype: str = "float32",
                     batched: bool = False, facts: HostFacts | None = None) -> str:
    """Why R14 does not prefetch B for ``config`` (empty: it does). Its schedule wants B read in place (not
    packed, per call or once), one matrix in NN, its rows at least a page apart (the hardware prefetchers stop
    at page boundaries, so the first line of every row of a new block misses), neither of B's axes padded nor
    N left a tail (R3), R8's jfirst order, K whole (R13), and at least :data:`PREFETCH_MIN_TILES` row tiles to
    spread the prefetches over. With ``facts``, the rule also wants the misses to be worth hiding and the block
    to fit where it goes: B larger than :data:`PREFETCH_MIN_L3_SHARE` of L3 (its lines come from memory) and a
    block (TK rows of one j-pack) no larger than L1."""
    c, size = config, itemsize(dtype)
    row = shape.N * size
    blockers = [
        (layout != "NN", f"{layout}: B is packed"), (batched, "a batched block"),
        (c.pack_b, "B is packed into panels"), (c.kparts > 1, "K is split"),
        (c.order != "jfirst", f"order {c.order}"),
        (c.tiled(shape)[1:] != (shape.N, shape.K), "R3 pads B or leaves N a tail"),
        (row < PAGE_BYTES, f"B's rows are {row} B apart, under a page: the hardware prefetchers follow them"),
        (c.tm // c.mr < PREFETCH_MIN_TILES, f"{c.tm // c.mr} row tiles, under {PREFETCH_MIN_TILES}"),
        (shape.K // c.tk * (c.tn // c.jpack) < 2, "one B block per task"),
    ]
    if facts is not None:
        b_bytes, block = shape.K * shape.N * size, c.tk * c.jpack * size
        l3 = facts.l3_bytes or 0
        blockers += [
            (b_bytes * PREFETCH_MIN_L3_SHARE.denominator <= l3 * PREFETCH_MIN_L3_SHARE.numerator,
             f"B's {b_bytes / 2**20:.1f} MiB fit in {PREFETCH_MIN_L3_SHARE} of L3: its lines come from cache"),
            (block > l1_bytes(facts), f"the block ({block // 1024} KiB) exceeds L1"),
        ]
    return next((why for hit, why in blockers if hit), "")


@dataclasses.dataclass(frozen=True)
class Decision:
    knob: str
    value: Any
    rule: str
    why: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """A config with the reasoning behind it, for one shape on one machine."""

    shape: MatmulShape
    dtype: str
    layout: str
    facts: HostFacts
    config: RuleConfig
    decisions: tuple[Decision, ...]
    overrides: tuple[str, ...] = ()

    @property
    def prefetch(self) -> bool:
        """R14: B's next block prefetched in software, as its decision says (:func:`prefetch_blocker`; not a
        config knob: it depends on the machine, and records of configs measured before it stay valid)."""
        return any(d.knob == "prefetch" and d.value for d in self.decisions)

    def budget(self) -> list[dict[str, Any]]:
        """Working sets of the schedule's levels against the budget each rule set."""
        c, size = self.config, itemsize(self.dtype)
        regs = vector_registers(self.facts)
        acc = c.mr * c.jpack // c.vector
        l1, l2 = l1_bytes(self.facts), l2_bytes(self.facts)
        def cache(level: str, what: str, rows: int, cols: int, budget: int) -> dict[str, Any]:
            return {"level": level, "what": f"{what} {rows} x {cols}", "unit": "bytes",
                    "used": rows * cols * size, "budget": budget}

        return [
            {"level": "registers", "what": f"{acc} accumulators + {c.jpack // c.vector} B vectors + 1 broadcast",
             "unit": "registers", "used": acc + c.jpack // c.vector + 1, "budget": regs},
            cache("L1", "packed B micro-panel", c.tk, c.jpack, l1),
            cache("L1", "A rows", c.mr, c.tk, l1),
            cache("L2", "packed B block", c.tk, c.tn, l2),
            cache("L2", "C tile", c.tm, c.tn, l2),
        ]

    def table(self) -> str:
        """The decisions and the cache budget as plain text."""
        s = self.shape
        mp, np_, kp = self.config.padded(s)
        lines = [
            f"rule_based plan for M={s.M} K={s.K} N={s.N} ({self.dtype}, {self.layout}) on {self.facts.profile}",
            f"  {self.facts.simd_lanes_fp32} fp32 lanes, {vector_registers(self.facts)} vector registers, "
            f"L1d {kib(l1_bytes(self.facts))}, L2 {kib(l2_bytes(self.facts))}, {self.facts.runtime_threads} threads",
            "",
            f"  {'knob':<10} {'value':>8}  {'rule':<5} why",
        ]
        for d in self.decisions:
            lines.append(f"  {d.knob:<10} {str(d.value):>8}  {d.rule:<5} {d.why}")
        lines += [
            "",
            f"  padded to M={mp} N={np_} K={kp}; {self.config.tasks(s)} parallel tasks "
            f"over {self.facts.runtime_threads} threads"
            + (f"; N's last {tail} columns by a loop of their own (R3)" if (tail := self.config.tail(s)) else ""),
            "",
            f"  {'level':<9} {'working set':<44} {'used':>10} {'budget':>10}",
        ]
        for b in self.budget():
            show = kib if b["unit"] == "bytes" else str
            used, budget = show(b["used"]), show(b["budget"])
            lines.append(f"  {b['level']:<9} {b['what']:<44} {used:>10} {budget:>10}")
        if self.overrides:
            lines += ["", f"  overridden by the caller: {', '.join(self.overrides)}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- hardware helpers
def itemsize(dtype: str) -> int:
    return np.dtype(check_dtype(dtype)).itemsize


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# Conservative defaults when sysfs does not report a cache.
_DEFAULT_L1 = 32 * 1024
_DEFAULT_L2 = 256 * 1024


def l1_bytes(facts: HostFacts) -> int:
    return facts.l1d_bytes or _DEFAULT_L1


def l2_bytes(facts: HostFacts) -> int:
    return facts.l2_bytes or _DEFAULT_L2


def vector_registers(facts: HostFacts) -> int:
    """Architectural vector registers: 32 with AVX-512 or on AArch64, else 16."""
    if "avx512f" in facts.isa or facts.arch in ("aarch64", "arm64"):
        return 32
    return 16


def vector_lanes(facts: HostFacts, dtype: str) -> int:
    """R1: SIMD lanes of ``dtype`` (fp32 lanes scaled by element size)."""
    return max(1, facts.simd_lanes_fp32 * 4 // itemsize(dtype))


__all__ = [
    "ORDERS", "RULES", "Decision", "Plan", "RuleConfig", "RuleError", "itemsize", "kib", "l1_bytes", "l2_bytes",
    "round_up", "vector_lanes", "vector_registers",
]
