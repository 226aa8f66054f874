"""The hardware-aware rule-based schedule: no tuning, every choice explained.

Two functions do all the work:

* :func:`decide` maps (shape, dtype, layout, hardware facts) to a
  :class:`RuleConfig` (TM, TN, TK, register rows, j-pack, unroll, write-back
  width, loop order, B packing) and records, for every knob, the rule that set
  it and why. Vector width, register count, cache sizes and thread count come
  from :class:`~matmul.hardware.HostFacts`; nothing here is a constant for one
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
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tvm.s_tir import Schedule

from .hardware import HostFacts
from .kernel import BLOCK, check_dtype, check_layout
from .workloads import MatmulShape

#: The rules, by id. ``describe`` prints the id next to each decision.
RULES: dict[str, str] = {
    "R1": "vector width = the target's SIMD lanes for the element type",
    "R2": "register tile: the most accumulators (mr x j-pack / lanes) that leave one register per B vector "
          "and one for the A broadcast, with mr <= M, preferring tiles that divide N, then M",
    "R3": "pad M, N (and K) up to the tiles with zeros rather than predicate the hot loop",
    "R4": "TK: the packed B micro-panel (TK x j-pack) fills at most 3/4 of L1 (the rest: A rows, stack)",
    "R5": "pack B into j-pack-wide panels per (task, TK) block when at least two row blocks reuse them "
          "(or the layout is NT): contiguous, no cache-set aliasing, NT transposed for free",
    "R6": "TN: up to 4 j-packs, so a task's packed B block stays within L2 alongside its C tile",
    "R7": "TM: the whole of M per task (B is packed once) unless that leaves fewer than 4 tasks per "
          "thread; the C tile must fit in half of L2",
    "R8": "loop order task > ko > jo > io > ki > ir > jv: the B micro-panel is reused from L1 by every row block",
    "R9": "unroll the ki loop by a small step; LLVM unrolls the register tile itself",
    "R10": "accumulate the task tile in a local buffer (cache_write), zero it outside the k loops "
           "(decompose_reduction), and write it back once, vectorised",
    "R11": "parallelise the fused task loop over the runtime threads",
}

#: Loop orders :func:`apply_config` knows. ``jfirst`` is R8's; ``ifirst``
#: swaps the two micro-tile loops (each row block sweeps all of the B block).
ORDERS = ("jfirst", "ifirst")
#: Aim for at least this many parallel tasks per runtime thread (R7).
TASKS_PER_THREAD = 4
#: Upper bound on micro-panels per task column tile (R6).
MAX_PANELS_PER_TASK = 4
#: Share of L1 the packed B micro-panel may fill (R4). Half of L1 (TK=128 on
#: AVX2) and 3/4 (TK=256) differ by 3-4% in two paired runs, in favour of 3/4.
L1_SHARE_NUM, L1_SHARE_DEN = 3, 4
#: Knobs that take positive integers.
_INT_KNOBS = ("tm", "tn", "tk", "mr", "jpack", "vector", "writeback", "unroll")
#: Default explicit unroll step of the ki loop (R9).
UNROLL_STEP = 4


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

    def padded(self, shape: MatmulShape) -> tuple[int, int, int]:
        """M, N, K after R3's padding: multiples of tm, tn and tk."""
        return (_round_up(shape.M, self.tm), _round_up(shape.N, self.tn), _round_up(shape.K, self.tk))

    def tasks(self, shape: MatmulShape) -> int:
        mp, np_, _ = self.padded(shape)
        return (mp // self.tm) * (np_ // self.tn)

    def check(self) -> RuleConfig:
        """Raise :class:`RuleError` naming every broken constraint."""
        problems = []
        for name in _INT_KNOBS:
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

    def budget(self) -> list[dict[str, Any]]:
        """Working sets of the schedule's levels against the budget each rule set."""
        c, size = self.config, _itemsize(self.dtype)
        regs = vector_registers(self.facts)
        acc = c.mr * c.jpack // c.vector
        l1, l2 = _l1(self.facts), _l2(self.facts)
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
            f"L1d {_kib(_l1(self.facts))}, L2 {_kib(_l2(self.facts))}, {self.facts.runtime_threads} threads",
            "",
            f"  {'knob':<10} {'value':>8}  {'rule':<5} why",
        ]
        for d in self.decisions:
            lines.append(f"  {d.knob:<10} {str(d.value):>8}  {d.rule:<5} {d.why}")
        lines += [
            "",
            f"  padded to M={mp} N={np_} K={kp}; {self.config.tasks(s)} parallel tasks "
            f"over {self.facts.runtime_threads} threads",
            "",
            f"  {'level':<9} {'working set':<44} {'used':>10} {'budget':>10}",
        ]
        for b in self.budget():
            show = _kib if b["unit"] == "bytes" else str
            used, budget = show(b["used"]), show(b["budget"])
            lines.append(f"  {b['level']:<9} {b['what']:<44} {used:>10} {budget:>10}")
        if self.overrides:
            lines += ["", f"  overridden by the caller: {', '.join(self.overrides)}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- hardware helpers
def _itemsize(dtype: str) -> int:
    return np.dtype(check_dtype(dtype)).itemsize


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# Conservative defaults when sysfs does not report a cache.
_DEFAULT_L1 = 32 * 1024
_DEFAULT_L2 = 256 * 1024


def _l1(facts: HostFacts) -> int:
    return facts.l1d_bytes or _DEFAULT_L1


def _l2(facts: HostFacts) -> int:
    return facts.l2_bytes or _DEFAULT_L2


def vector_registers(facts: HostFacts) -> int:
    """Architectural vector registers: 32 with AVX-512 or on AArch64, else 16."""
    if "avx512f" in facts.isa or facts.arch in ("aarch64", "arm64"):
        return 32
    return 16


def vector_lanes(facts: HostFacts, dtype: str) -> int:
    """R1: SIMD lanes of ``dtype`` (fp32 lanes scaled by element size)."""
    return max(1, facts.simd_lanes_fp32 * 4 // _itemsize(dtype))


# --------------------------------------------------------------------------- the rules
def _register_tile(shape: MatmulShape, lanes: int, regs: int) -> tuple[int, int]:
    """R2: (mr, vectors across j) with the most accumulators that fit."""
    best_key, best = None, (1, 1)
    for nv in range(1, 5):
        for mr in range(1, min(8, shape.M) + 1):  # never more rows than M has
            if mr * nv + nv + 1 > regs:
                continue
            key = (shape.N % (nv * lanes) == 0 or shape.N <= nv * lanes,
                   min(mr * nv, regs - nv - 1),
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


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Knob names and value types, checked before any shape is seen.

    Raises
    ------
    RuleError
        An unknown knob (the message lists them) or a value of the wrong kind.
    """
    overrides = dict(overrides)
    knobs = [f.name for f in dataclasses.fields(RuleConfig)]
    unknown = set(overrides) - set(knobs)
    if unknown:
        raise RuleError(f"unknown rule knob(s) {', '.join(sorted(unknown))}; knobs are: {', '.join(knobs)}")
    for knob, value in overrides.items():
        if knob in _INT_KNOBS and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                   or value < 1):
            raise RuleError(f"illegal rule config: {knob} must be a positive integer, got {value!r}")
        if knob == "order" and value not in ORDERS:
            raise RuleError(f"illegal rule config: order {value!r} is not one of {', '.join(ORDERS)}")
        if knob == "pack_b" and not isinstance(value, bool):
            raise RuleError(f"illegal rule config: pack_b must be on or off, got {value!r}")
    return overrides


def decide(
    shape: MatmulShape,
    facts: HostFacts,
    *,
    dtype: str = "float32",
    layout: str = "NN",
    overrides: Mapping[str, Any] | None = None,
) -> Plan:
    """Apply the rules to one shape. ``overrides`` pins knobs (for ablations).

    Raises
    ------
    RuleError
        An override names an unknown knob or makes the config illegal.
    """
    check_layout(layout)
    size = _itemsize(dtype)
    overrides = check_overrides(overrides or {})
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
    jpack = note("jpack", nv0 * lanes, "R2", f"{nv0} vectors across j; {mr0 * nv0} accumulators of {regs} registers")
    mr = note("mr", mr0, "R2", f"{mr0} rows, at most M")
    # R3 pads M and N to the register tile; the task tiles below divide the padded sizes.
    mp, np_ = _round_up(shape.M, mr), _round_up(shape.N, jpack)

    tk_budget = max(lanes, _l1(facts) * L1_SHARE_NUM // L1_SHARE_DEN // (jpack * size))
    tk_budget = 1 << (tk_budget.bit_length() - 1)  # power of two
    if shape.K <= tk_budget:
        tk0, why_tk = shape.K, f"all of K fits the L1 budget of {tk_budget}"
    else:
        tk0 = _largest_dividing_multiple(shape.K, lanes, tk_budget)
        if tk0 * 2 <= tk_budget:  # no good divisor: pad K instead
            tk0 = tk_budget
            why_tk = f"{tk_budget} x {jpack} x {size} B <= 3/4 L1; K padded to a multiple"
        else:
            why_tk = f"largest divisor of K with {tk0} x {jpack} x {size} B <= 3/4 L1"
    tk = note("tk", tk0, "R4", why_tk)

    l2 = _l2(facts)
    tn_cap = jpack * MAX_PANELS_PER_TASK
    tn0 = _largest_dividing_multiple(np_, jpack, tn_cap)
    threads = max(1, facts.runtime_threads)
    want = TASKS_PER_THREAD * threads
    # Fewer columns per task before cutting M (cutting M repacks B per row block).
    while np_ // tn0 < want and tn0 > jpack:
        tn0 = _largest_dividing_multiple(np_, jpack, tn0 - jpack)
    tn = note("tn", tn0, "R6", f"{tn0 // jpack} j-packs; {np_ // tn0} column tasks")

    tm_cap = max(mr, (l2 // 2) // (tn * size) // mr * mr)
    tm0 = _largest_dividing_multiple(mp, mr, min(mp, tm_cap))
    while (mp // tm0) * (np_ // tn) < want and tm0 > mr:
        tm0 = _largest_dividing_multiple(mp, mr, tm0 - mr)
    tasks = (mp // tm0) * (np_ // tn)
    tm = note("tm", tm0, "R7", f"{mp // tm0} row block(s) x {np_ // tn} column tiles = {tasks} tasks "
                              f"for {threads} threads")
    unroll = note("unroll", math.gcd(UNROLL_STEP, tk), "R9", "ki unrolled by this step")
    writeback = note("writeback", lanes, "R10", "write-back stores one vector at a time")
    order = note("order", "jfirst", "R8", "B micro-panel reused from L1 by every row block")
    row_blocks = mp // mr
    if layout == "NT":
        pack0, why_pack = True, "NT: B transposed into contiguous panels while packing"
    elif row_blocks >= 2:
        pack0, why_pack = True, f"each panel reused by {row_blocks} row blocks; contiguous, no set aliasing"
    else:
        pack0, why_pack = False, "one row block: a packed panel would be read once, the copy is pure cost"
    pack_b = note("pack_b", pack0, "R5", why_pack)
    config = RuleConfig(tm=tm, tn=tn, tk=tk, mr=mr, jpack=jpack, vector=lanes, unroll=unroll,
                        writeback=writeback, order=order, pack_b=bool(pack_b)).check()
    pinned = tuple(f"{k}={v}" for k, v in overrides.items())
    return Plan(shape, check_dtype(dtype), layout, facts, config, tuple(decisions), pinned)


# --------------------------------------------------------------------------- applying a config
def apply_config(sch: Schedule, config: RuleConfig, shape: MatmulShape, layout: str = "NN") -> None:
    """Schedule the canonical kernel's block ``C`` with ``config``.

    Raises
    ------
    RuleError
        The config is illegal (see :meth:`RuleConfig.check`).
    """
    c = config.check()
    mp, np_, kp = c.padded(shape)
    block = sch.get_sblock(BLOCK)
    if (mp, np_, kp) != (shape.M, shape.N, shape.K):  # R3
        sch.pad_einsum(block, [c.tm, c.tn, c.tk])
    packed = None
    if c.pack_b:  # R5: panels [N / jpack, K, jpack] of B
        packed = sch.cache_read(block, 1, "global")
        jp = c.jpack
        if layout == "NN":
            sch.transform_layout(block, ("read", 1), lambda k, j: (j // jp, k, j % jp))
        else:
            sch.transform_layout(block, ("read", 1), lambda j, k: (j // jp, k, j % jp))
    i, j, k = sch.get_loops(block)
    io, i_mid, ir = sch.split(i, [None, c.tm // c.mr, c.mr])
    jo, j_mid, jr = sch.split(j, [None, c.tn // c.jpack, c.jpack])
    ko, ki = sch.split(k, [None, c.tk])
    if c.order == "jfirst":  # R8
        sch.reorder(io, jo, ko, j_mid, i_mid, ki, ir, jr)
    else:
        sch.reorder(io, jo, ko, i_mid, j_mid, ki, ir, jr)
    local = sch.cache_write(block, 0, "local")  # R10
    sch.reverse_compute_at(local, jo)
    task = sch.fuse(io, jo)
    sch.parallel(task)  # R11
    if packed is not None:
        sch.compute_at(packed, ko)
        ko_stmt = sch.get(ko)
        loops = sch.get_loops(packed)
        depth = next(n for n, loop in enumerate(loops) if sch.get(loop).same_as(ko_stmt))
        copy = loops[depth + 1:]  # (k, j) for NN, (j, k) for NT; unit loops may be gone
        if layout == "NT" and len(copy) == 2:
            sch.reorder(copy[1], copy[0])  # write panels row by row: reads stride K, writes contiguous
        if copy:
            _, lane = sch.split(sch.get_loops(packed)[-1], [None, c.vector])
            sch.vectorize(lane)
    jv_outer, jv = sch.split(jr, [None, c.vector])
    sch.vectorize(jv)
    sch.unroll(jv_outer)
    sch.unroll(ir)
    if c.unroll > 1:
        _, kq = sch.split(ki, [None, c.unroll])
        sch.unroll(kq)
    _, wb = sch.split(sch.get_loops(local)[-1], [None, c.writeback])
    sch.vectorize(wb)
    sch.decompose_reduction(block, ko)
    # pad_einsum copies an operand in (A, B) or out (C) when one of its axes grew.
    grown = {"M": mp != shape.M, "N": np_ != shape.N, "K": kp != shape.K}
    for name, axes in (("A_pad", "MK"), ("B_pad", "KN"), ("C_pad", "MN")):
        if any(grown[a] for a in axes):
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])


# --------------------------------------------------------------------------- variant names with overrides
_OVERRIDE = re.compile(r"^(?P<base>[A-Za-z_][\w]*)\[(?P<body>[^\]]*)\]$")


def parse_overrides(name: str) -> tuple[str, dict[str, Any]] | None:
    """``"rule_based[tk=64,order=ifirst]"`` -> ``("rule_based", {"tk": 64, "order": "ifirst"})``.

    Returns None when ``name`` has no bracket. Values are ints where they
    parse, booleans for ``true/false/on/off``, strings otherwise.
    """
    m = _OVERRIDE.match(name)
    if not m:
        return None
    knobs = {f.name for f in dataclasses.fields(RuleConfig)}
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in m["body"].split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in knobs:
            raise RuleError(f"bad rule override {item!r} in {name!r}; write knob=value with knob one of: "
                            f"{', '.join(sorted(knobs))}")
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "on", "yes"):
            out[key] = True
        elif low in ("false", "off", "no"):
            out[key] = False
        else:
            try:
                out[key] = int(raw)
            except ValueError:
                out[key] = raw
    return m["base"], out


__all__ = [
    "ORDERS",
    "RULES",
    "Decision",
    "Plan",
    "RuleConfig",
    "RuleError",
    "apply_config",
    "check_overrides",
    "decide",
    "parse_overrides",
    "vector_lanes",
    "vector_registers",
]
