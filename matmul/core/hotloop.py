"""What a kernel's hot loop does, read from its assembly: FMAs, loads, stores, and spills to the stack.

A matmul's speed is set by its innermost FMA loop. At its best that loop
holds the register tile's accumulators in registers, loads one B vector per
tile column and one broadcast of A per tile row, and touches neither memory
for C nor the stack: ``rule_based``'s tile of ``mr`` rows and ``v`` vectors
reads ``(mr + v) / (mr * v)`` loads per FMA (0.42-0.46 on the BERT shapes
with AVX-512), the seed's ``full`` 2.0. When a tile wants more vector
registers than the target has, LLVM keeps some values on the stack and reads
them back in the loop: loads the schedule did not ask for, from memory the
process placed. MetaSchedule's record for BERT's MLP reduce at M = 16 on
Zen 4 hoists a 12 x 64 block of B above a 16-row loop, 48 vectors for 32
registers, and reads 29 of them back from the stack in every iteration
(0.94 loads per FMA); over eight fresh processes its time over
``rule_based``'s in the same rounds read 1.23-1.59x, while a second build of
``rule_based`` read 0.99-1.01x (``evidence/znver4-2c-simd16-t2/hot-loops/``).

:func:`hot_loop` finds the loop: it splits each function of the assembly
into basic blocks, finds its natural loops (a branch back to a block that
dominates it; the back edges to one header make one loop), keeps the
innermost ones that hold packed FMAs and takes the one with the most FMA
lanes. It counts one iteration as every block of the loop once (both sides
of a branch inside it are summed), and reads x86-64 (AT&T syntax, as LLVM
prints it) and AArch64 (NEON). Loads and stores are instructions: an
AArch64 ``ldp`` of two vectors is one load, as is a gather. What goes
through the stack pointer (or a frame pointer the function set up) is
counted apart: in an FMA loop, values spilled from registers, or a small
buffer TVM placed on the stack.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

#: x86 packed FMA (fused multiply-add/subtract, any operand order), FP32 (``ps``) or FP64 (``pd``).
_X86_FMA = re.compile(r"^vfn?m(?:add|sub)\d{3}p([sd])$")
_X86_REG_BYTES = {"zmm": 64, "ymm": 32, "xmm": 16}
#: AArch64 NEON FMAs and their lanes by arrangement.
_ARM_FMA = ("fmla", "fmls")
_ARM_LANES = {"4s": 4, "2s": 2, "2d": 2}
_LABEL = re.compile(r"^([.\w$]+):")
_FUNC = re.compile(r"^\s*\.type\s+([.\w$]+),\s*[@%]function")
#: Branches whose last operand is a label; of them the unconditional ones (no fall-through); returns.
_X86_BRANCH = re.compile(r"^j[a-z]+$")
_ARM_BRANCH = re.compile(r"^(?:b|b\.[a-z]+|cbn?z|tbn?z)$")
_JUMPS = {"jmp", "jmpq", "b"}
_ENDS = {"ret", "retq", "retl", "ud2", "br", "brk"}  # ``br xN``: an indirect jump, its target unknown
#: x86 instructions whose memory operand is not accessed (or only flushed).
_X86_NO_ACCESS = re.compile(r"^(?:lea|nop|clflush|clwb)")
#: x86 instructions that only read every operand, a memory destination included.
_X86_READS_ONLY = re.compile(r"^(?:cmp(?!xchg)[a-z]*|test[a-z]*|bt[wlq]?|v?u?comis[sd]|v?ptest|v?ldmxcsr"
                             r"|push[wlq]?|call[q]?|jmp[q]?)$")
#: x86 instructions with one, memory, operand that they only write, or read and write.
_X86_WRITES_ONE = re.compile(r"^(?:set[a-z]+|pop[wlq]?|v?stmxcsr|fn?stcw|fn?stsw)$")
_X86_UPDATES_ONE = re.compile(r"^(?:inc|dec|neg|not)[bwlq]?$")
#: x86 instructions that only write a memory destination (others with one there read it too: ``add %rax, (%rbx)``).
_X86_STORE_ONLY = re.compile(r"^(?:mov|vmov|vextract|vpextr|extractps|pextr|vcvtps2ph|vpmov|vp?scatter|stos"
                             r"|vp?maskmov|vp?compress|movnt|vmovnt)")
_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class AsmError(ValueError):
    """Assembly of an architecture this reader does not know, or with no loop of packed FMAs."""


@dataclasses.dataclass(frozen=True)
class HotLoop:
    """Counts for one iteration of a kernel's hot loop: every block of the loop once."""

    function: str
    label: str
    instructions: int
    fmas: int
    #: The FMAs' vector width in elements of their type (the most common one in the loop).
    lanes: int
    #: Load instructions, the stack's included: vector and scalar loads, broadcasts, FMAs' memory operands.
    loads: int
    stores: int
    #: Of those, the ones through the stack pointer (or the frame pointer the function set up).
    stack_loads: int
    stack_stores: int
    prefetches: int

    @property
    def loads_per_fma(self) -> float:
        return self.loads / self.fmas

    @property
    def spills(self) -> bool:
        return bool(self.stack_loads or self.stack_stores)

    def as_dict(self) -> dict[str, Any]:
        """The counts and ``loads_per_fma`` as plain values (a benchmark's ``extra_info``, ``--json``)."""
        return {**dataclasses.asdict(self), "loads_per_fma": round(self.loads_per_fma, 3)}

    def describe(self) -> str:
        spills = (f"{self.stack_loads} loads and {self.stack_stores} stores on the stack" if self.spills
                  else "no stack access")
        return (f"hot loop {self.label} in {self.function}: {self.fmas} FMAs of {self.lanes} lanes, "
                f"{self.loads} loads ({self.loads_per_fma:.2f} per FMA), {self.stores} stores, "
                f"{self.prefetches} prefetches, {self.instructions} instructions; {spills}")


@dataclasses.dataclass
class _Line:
    function: str
    label: str | None = None
    mnemonic: str = ""
    operands: tuple[str, ...] = ()


def _split_operands(text: str) -> tuple[str, ...]:
    """Operands split at the commas outside parentheses, brackets and braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return tuple(out)


def _lines(asm: str, comment: str) -> list[_Line]:
    out: list[_Line] = []
    function = "?"
    for raw in asm.splitlines():
        text = raw.split(comment, 1)[0].rstrip()
        if m := _FUNC.match(text):
            function = m.group(1)
            continue
        stripped = text.strip()
        if not stripped:
            continue
        if m := _LABEL.match(stripped):
            out.append(_Line(function, label=m.group(1)))
            continue
        if stripped.startswith("."):  # a directive
            continue
        mnemonic, _, rest = stripped.partition(" ") if "\t" not in stripped else stripped.partition("\t")
        out.append(_Line(function, mnemonic=mnemonic.strip().lower(), operands=_split_operands(rest.strip())))
    return out


def _arch(asm: str, arch: str | None) -> str:
    """``x86_64`` or ``aarch64``: as given, else from the registers of the instruction lines (not directives,
    strings or comments)."""
    if arch is not None:
        if arch not in _ARCHES:
            raise AsmError(f"no hot-loop reader for {arch!r} assembly; choose from: {', '.join(sorted(_ARCHES))}")
        return _ARCHES[arch]
    code = "\n".join(line.split("//", 1)[0].split("#", 1)[0] for line in asm.splitlines()
                     if line.strip() and not line.strip().startswith("."))
    if re.search(r"%(?:r[a-z0-9]+|e[a-z]{2}|[xyz]mm\d+)\b", code):
        return "x86_64"
    if re.search(r"\b(?:v\d+\.\d*[bhsd]|x\d+|q\d+)\b", code):
        return "aarch64"
    raise AsmError("neither x86-64 (AT&T) nor AArch64 assembly: no register this reader knows")


def _x86_counts(line: _Line, frame: bool) -> Counter:
    c: Counter = Counter()
    m, ops = line.mnemonic, line.operands
    if f := _X86_FMA.match(m):
        width = max((_X86_REG_BYTES[r] for op in ops for r in re.findall(r"%([xyz]mm)\d+", op)), default=16)
        c["fma"] += 1
        c[f"lanes{width // (4 if f.group(1) == 's' else 8)}"] += 1
    mem = [i for i, op in enumerate(ops) if "(" in op]
    if not mem or _X86_NO_ACCESS.match(m):
        return c
    stack = any(re.search(r"\(%rsp\b" + (r"|\(%rbp\b" if frame else ""), ops[i]) for i in mem)
    if m.startswith("prefetch"):
        c["prefetch"] += 1
        return c
    last = len(ops) - 1
    if last == 0:  # the one operand is the memory one
        load, store = not _X86_WRITES_ONE.match(m), bool(_X86_WRITES_ONE.match(m) or _X86_UPDATES_ONE.match(m))
    else:  # AT&T: the destination comes last
        into, reads_only = mem[-1] == last, bool(_X86_READS_ONLY.match(m))
        load = any(i != last for i in mem) or not into or reads_only or not _X86_STORE_ONLY.match(m)
        store = into and not reads_only
    if load:
        c["load"] += 1
        c["stack_load"] += stack
    if store:
        c["store"] += 1
        c["stack_store"] += stack
    return c


def _arm_counts(line: _Line, frame: bool) -> Counter:
    c: Counter = Counter()
    m, ops = line.mnemonic, line.operands
    if m in _ARM_FMA and ops:
        arr = re.search(r"\.(\d+[bhsd])\b", ops[0])
        if arr and arr.group(1) in _ARM_LANES:
            c["fma"] += 1
            c[f"lanes{_ARM_LANES[arr.group(1)]}"] += 1
    mem = any("[" in op for op in ops)
    stack = any(re.search(r"\[sp\b" + (r"|\[x29\b" if frame else ""), op) for op in ops)
    if m.startswith("prf") and mem:
        c["prefetch"] += 1
    elif m.startswith("ld") and (mem or (len(ops) == 2 and ops[-1].startswith("."))):  # ``ldr q0, .LCPI0_0``
        c["load"] += 1
        c["stack_load"] += stack
    elif m.startswith("st") and mem:
        c["store"] += 1
        c["stack_store"] += stack
    return c


def _frame(line: _Line, x86: bool) -> bool:
    """Whether the line sets up a frame pointer (then memory through it is the stack frame's)."""
    if x86:
        return line.mnemonic == "movq" and line.operands == ("%rsp", "%rbp")
    return line.operands[:2] == ("x29", "sp") and line.mnemonic in ("mov", "add")


# --------------------------------------------------------------------------- control flow
def _blocks(lines: list[_Line], x86: bool) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Basic blocks (start, end) of the lines and each block's successors; no edge leaves a function."""
    branch = _X86_BRANCH if x86 else _ARM_BRANCH
    starts = {0}
    for i, line in enumerate(lines):
        if line.label is not None or (i and line.function != lines[i - 1].function):
            starts.add(i)
        if line.label is None and (branch.match(line.mnemonic) or line.mnemonic in _ENDS):
            starts.add(i + 1)
    bounds = sorted(b for b in starts if b < len(lines)) + [len(lines)]
    blocks = list(zip(bounds, bounds[1:]))
    at = {lines[s].label: k for k, (s, _) in enumerate(blocks) if lines[s].label is not None}
    succ: list[list[int]] = []
    for k, (s, e) in enumerate(blocks):
        last = next((lines[i] for i in range(e - 1, s - 1, -1) if lines[i].label is None), None)
        fall = k + 1 < len(blocks) and lines[blocks[k + 1][0]].function == lines[s].function
        out = []
        if last is not None and branch.match(last.mnemonic) and last.operands:
            target = at.get(last.operands[-1])
            if target is not None and lines[blocks[target][0]].function == lines[s].function:
                out.append(target)
            if last.mnemonic not in _JUMPS and fall:
                out.append(k + 1)
        elif (last is None or last.mnemonic not in _ENDS) and fall:
            out.append(k + 1)
        succ.append(out)
    return blocks, succ


def _natural_loops(blocks: list[tuple[int, int]], succ: list[list[int]], lines: list[_Line]) -> dict[int, set[int]]:
    """Header block -> the blocks of its natural loop (all back edges to it), per function."""
    pred: list[list[int]] = [[] for _ in blocks]
    for k, out in enumerate(succ):
        for t in out:
            pred[t].append(k)
    loops: dict[int, set[int]] = {}
    entries = [k for k, (s, _) in enumerate(blocks) if k == 0 or lines[s].function != lines[blocks[k - 1][0]].function]
    for entry in entries:
        reach, todo = {entry}, [entry]
        while todo:
            for t in succ[todo.pop()]:
                if t not in reach:
                    reach.add(t)
                    todo.append(t)
        dom = {k: set(reach) for k in reach}
        dom[entry] = {entry}
        changed = True
        while changed:
            changed = False
            for k in sorted(reach - {entry}):
                new = set.intersection(*(dom[p] for p in pred[k] if p in reach)) | {k}
                if new != dom[k]:
                    dom[k], changed = new, True
        for u in reach:
            for h in succ[u]:
                if h in dom[u]:  # a back edge u -> h
                    body, todo = loops.setdefault(h, {h}), [u]
                    while todo:
                        b = todo.pop()
                        if b not in body:
                            body.add(b)
                            todo.extend(p for p in pred[b] if p in reach)  # never code the entry cannot reach
    return loops


def _loops(asm: str, arch: str | None) -> tuple[list[_Line], list[tuple[int, int]], list[tuple[int, Counter]]]:
    """The lines, the blocks, and (header, counts) of each innermost natural loop holding a packed FMA."""
    x86 = _arch(asm, arch) == "x86_64"
    lines = _lines(asm, "#" if x86 else "//")
    count = _x86_counts if x86 else _arm_counts
    frames = {line.function for line in lines if _frame(line, x86)}
    per_line = [count(line, line.function in frames) if line.label is None else Counter() for line in lines]
    blocks, succ = _blocks(lines, x86)
    block_counts = [sum(per_line[s:e], Counter()) for s, e in blocks]
    loops = {h: body for h, body in _natural_loops(blocks, succ, lines).items()
             if any(block_counts[b]["fma"] for b in body)}
    # Innermost: no other FMA loop lies strictly inside it.
    inner = [h for h, body in loops.items() if not any(o != h and loops[o] < body for o in loops)]
    out = []
    for h in sorted(inner):
        total = sum((block_counts[b] for b in loops[h]), Counter())
        total["instructions"] = sum(1 for b in loops[h] for i in range(*blocks[b]) if lines[i].label is None)
        out.append((h, total))
    return lines, blocks, out


def _weight(total: Counter) -> int:
    """FMA lanes: how much multiply-add work an iteration does, so a wide main loop outranks a narrow tail."""
    return sum(int(k[5:]) * v for k, v in total.items() if k.startswith("lanes"))


def _hot(lines: list[_Line], blocks: list[tuple[int, int]], header: int, total: Counter) -> HotLoop:
    first = lines[blocks[header][0]]
    lanes = max((k for k in total if k.startswith("lanes")), key=lambda k: (total[k], int(k[5:])))
    return HotLoop(function=first.function, label=first.label or "?", instructions=total["instructions"],
                   fmas=total["fma"], lanes=int(lanes[5:]), loads=total["load"], stores=total["store"],
                   stack_loads=total["stack_load"], stack_stores=total["stack_store"], prefetches=total["prefetch"])


def hot_loop(asm: str, arch: str | None = None) -> HotLoop:
    """The innermost natural loop of packed FMAs with the most FMA lanes, counted per iteration.

    ``arch`` (``x86_64`` or ``aarch64``; None: read from the registers) names the assembly's architecture.

    Raises
    ------
    AsmError
        Assembly of an unknown architecture, or no loop holding a packed FMA.
    """
    lines, blocks, inner = _loops(asm, arch)
    if not inner:
        raise AsmError("no loop holding a packed FMA in this assembly")
    header, total = max(inner, key=lambda ht: (_weight(ht[1]), -ht[0]))
    return _hot(lines, blocks, header, total)


#: A function TVM outlines for the body of a parallel loop; it belongs to the function printed before it.
_LAMBDA = re.compile(r"parallel_lambda")


def owner(function: str) -> str:
    """The TVM function a function of the assembly serves: its own name less TVM's ``__tvm_ffi_`` (the packed
    entry) and ``_compute_`` (the body) affixes; a parallel lambda is attributed by :func:`hot_loops` instead."""
    return re.sub(r"_compute_$", "", re.sub(r"^__tvm_ffi_", "", function))


def hot_loops(asm: str, arch: str | None = None) -> dict[str, HotLoop]:
    """The hot loop of each TVM function of a module's assembly (one compiled model holds many), by
    :func:`owner` name; a parallel lambda's loops count for the function printed before it (TVM prints each
    function's lambdas right after it). Functions without a loop of packed FMAs are left out.

    Raises
    ------
    AsmError
        Assembly of an unknown architecture.
    """
    lines, blocks, inner = _loops(asm, arch)
    owners: dict[str, str] = {}
    last = "?"
    for line in lines:
        if line.function not in owners:
            owners[line.function] = last if _LAMBDA.search(line.function) else owner(line.function)
            last = owners[line.function]
    best: dict[str, tuple[int, Counter]] = {}
    for header, total in inner:
        name = owners[lines[blocks[header][0]].function]
        if name not in best or _weight(total) > _weight(best[name][1]):
            best[name] = (header, total)
    return {name: _hot(lines, blocks, h, total) for name, (h, total) in best.items()}


__all__ = ["AsmError", "HotLoop", "hot_loop", "hot_loops", "owner"]
