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
from typing import Any

import numpy as np

from ...core.hardware import HostFacts
from ...core.kernel import check_dtype
from ...core.workloads import MatmulShape
from .constants import INT_KNOBS, ORDERS, PAGE_BYTES, PREFETCH_MIN_L3_SHARE, PREFETCH_MIN_TILES, UNROLL_STEP

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
          "place, and so do R12's streamed few rows; NT transposes by square tiles, each row "
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
           "of L3 (it streams from memory), one vector across j (JPACK) instead of R2's several. Past the GEMV, up "
           "to 8 rows whose register tile leaves two or more row blocks, where B exceeds half of L3: the same "
           "streaming (TK 8, a column range per thread, B read in place), every row block in each task",
    "R13": "split K between the threads (each a contiguous part of K into its own partial C, then a vectorised "
           "parallel sum) when the output has fewer tasks than threads (narrow N, M too small to split) and "
           "each part keeps at least 2048 k iterations",
    "R14": "where B is read in place (NN, not packed), its rows lie at least a page apart and it exceeds 1/5 of L3, "
           "prefetch into L1 the B block (TK rows of one j-pack, no larger than L1) the next step reads, a share "
           "at the head of each of at least 8 row tiles: the hardware prefetchers stop at page boundaries, so "
           "without it the first line of every row of a new block misses, to memory",
}



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
    "RULES", "Decision", "Plan", "RuleConfig", "RuleError", "itemsize", "kib", "l1_bytes", "l2_bytes",
    "round_up", "vector_lanes", "vector_registers",
]
