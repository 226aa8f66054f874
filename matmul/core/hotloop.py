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

:func:`hot_loop` finds the loop: of the loops the assembly holds (a label and
a later branch back to it), the innermost ones that hold packed FP32 FMAs,
the one with the most. It counts per iteration, as laid out in the text
(lines from the label to the branch back, so a branch inside it counts as
taken), and reads x86-64 (AT&T syntax, as LLVM prints it) and AArch64.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

#: x86 packed fp32 FMA (fused multiply-add/subtract, any operand order) and its register width in lanes.
_X86_FMA = re.compile(r"^v?f(?:n)?m(?:add|sub)\d{3}ps$")
_X86_LANES = {"zmm": 16, "ymm": 8, "xmm": 4}
_ARM_LANES = {"4s": 4, "2s": 2}
_LABEL = re.compile(r"^([.\w$]+):")
#: Branch mnemonics whose last operand is a label: x86 ``j*``; AArch64 ``b``, ``b.cond``, ``cbz``/``cbnz``,
#: ``tbz``/``tbnz``.
_X86_BRANCH = re.compile(r"^j[a-z]+$")
_ARM_BRANCH = re.compile(r"^(?:b|b\.[a-z]+|cbn?z|tbn?z)$")
_FUNC = re.compile(r"^\s*\.type\s+([.\w$]+),\s*[@%]function")
#: x86 instructions that touch no memory through their memory operand, or only read it in every position.
_X86_NO_ACCESS = ("lea", "nop")
_X86_READS_ONLY = ("cmp", "test", "bt", "ucomis", "comis", "vucomis", "vcomis", "vptest")
#: x86 instructions that only write a memory destination (others with one there read it too: ``add %rax, (%rbx)``).
_X86_STORE_ONLY = ("mov", "vmov", "vextract", "vpextr", "vcvtps2ph", "set", "vpmov", "vscatter", "vpscatter", "stos")


class AsmError(ValueError):
    """Assembly of an architecture this reader does not know, or with no loop of packed FMAs."""


@dataclasses.dataclass(frozen=True)
class HotLoop:
    """Counts for one iteration of a kernel's hot loop, as laid out in its assembly."""

    function: str
    label: str
    instructions: int
    fmas: int
    #: The FMAs' vector width (the most common one in the loop).
    lanes: int
    #: Memory reads, the stack's included: vector and scalar loads, broadcasts, FMAs' memory operands.
    loads: int
    stores: int
    #: Of those, the ones through the stack pointer (or the frame pointer the function set up): spill reloads
    #: and spill stores, values the loop could not keep in registers.
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
        spills = (f"{self.stack_loads} reloads and {self.stack_stores} stores on the stack" if self.spills
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


def _arch(asm: str) -> str:
    if re.search(r"%(?:r[a-z0-9]+|e[a-z]{2}|[xyz]mm\d+)\b", asm):
        return "x86_64"
    if re.search(r"\b(?:v\d+\.\d*[bhsd]|x\d+|q\d+)\b", asm):
        return "aarch64"
    raise AsmError("neither x86-64 (AT&T) nor AArch64 assembly: no register this reader knows")


def _x86_counts(line: _Line, frame: bool) -> Counter:
    c: Counter = Counter()
    m = line.mnemonic
    if _X86_FMA.match(m):
        widths = [_X86_LANES[r] for op in line.operands for r in re.findall(r"%(zmm|ymm|xmm)\d+", op)]
        c["fma"] += 1
        c[f"lanes{max(widths, default=1)}"] += 1
    mem = [i for i, op in enumerate(line.operands) if "(" in op]
    if not mem or m.startswith(_X86_NO_ACCESS):
        return c
    stack = any(re.search(r"\(%rsp\b" + (r"|\(%rbp\b" if frame else ""), line.operands[i]) for i in mem)
    if m.startswith("prefetch"):
        c["prefetch"] += 1
        return c
    last = len(line.operands) - 1
    into = mem[-1] == last and last > 0  # AT&T: the destination comes last
    reads_only = m.startswith(_X86_READS_ONLY)
    if any(i != last for i in mem) or not into or reads_only or not m.startswith(_X86_STORE_ONLY):
        c["load"] += 1
        c["stack_load"] += stack
    if into and not reads_only:
        c["store"] += 1
        c["stack_store"] += stack
    return c


def _arm_counts(line: _Line, frame: bool) -> Counter:
    c: Counter = Counter()
    m = line.mnemonic
    if m == "fmla" and line.operands:
        arr = re.search(r"\.(\d+[bhsd])\b", line.operands[0])
        if arr and arr.group(1) in _ARM_LANES:
            c["fma"] += 1
            c[f"lanes{_ARM_LANES[arr.group(1)]}"] += 1
    if not any("[" in op for op in line.operands):
        return c
    stack = any(re.search(r"\[sp\b" + (r"|\[x29\b" if frame else ""), op) for op in line.operands)
    if m.startswith("prfm"):
        c["prefetch"] += 1
    elif m.startswith(("ld", "ldr")):
        c["load"] += 1
        c["stack_load"] += stack
    elif m.startswith(("st", "str")):
        c["store"] += 1
        c["stack_store"] += stack
    return c


def _loops(lines: list[_Line], branch: re.Pattern[str]) -> list[tuple[int, int]]:
    """(head index, back-branch index) of every backward branch to a label of the same function."""
    where = {line.label: i for i, line in enumerate(lines) if line.label}
    out = []
    for j, line in enumerate(lines):
        if line.label is None and branch.match(line.mnemonic) and line.operands:
            target = line.operands[-1]
            i = where.get(target)
            if i is not None and i < j and lines[i].function == line.function:
                out.append((i, j))
    return out


#: A function TVM outlines for the body of a parallel loop; it belongs to the function printed before it.
_LAMBDA = re.compile(r"parallel_lambda")


def owner(function: str) -> str:
    """The TVM function a function of the assembly serves: its own name less TVM's ``__tvm_ffi_`` (the packed
    entry) and ``_compute_`` (the body) affixes; a parallel lambda is attributed by :func:`hot_loops` instead."""
    return re.sub(r"_compute_$", "", re.sub(r"^__tvm_ffi_", "", function))


def _inner_loops(asm: str) -> tuple[list[_Line], list[Counter], list[tuple[int, int]]]:
    """The lines, each line's counts, and the innermost loops that hold a packed FP32 FMA."""
    x86 = _arch(asm) == "x86_64"
    lines = _lines(asm, "#" if x86 else "//")
    count = _x86_counts if x86 else _arm_counts
    frames = {line.function for line in lines
              if (x86 and line.mnemonic == "movq" and line.operands == ("%rsp", "%rbp"))
              or (not x86 and line.mnemonic == "mov" and line.operands == ("x29", "sp"))}
    per_line = [count(line, line.function in frames) if line.label is None else Counter() for line in lines]
    loops = [(i, j) for i, j in _loops(lines, _X86_BRANCH if x86 else _ARM_BRANCH)
             if sum(c["fma"] for c in per_line[i:j + 1])]
    # Innermost: no other FMA loop lies strictly inside it.
    inner = [(i, j) for i, j in loops if not any(i <= a and b <= j and (a, b) != (i, j) for a, b in loops)]
    return lines, per_line, inner


def _fmas(per_line: list[Counter], loop: tuple[int, int]) -> int:
    return sum(c["fma"] for c in per_line[loop[0]:loop[1] + 1])


def _hot(lines: list[_Line], per_line: list[Counter], loop: tuple[int, int]) -> HotLoop:
    i, j = loop
    total = sum(per_line[i:j + 1], Counter())
    lanes = max((k for k in total if k.startswith("lanes")), key=lambda k: (total[k], int(k[5:])))
    return HotLoop(
        function=lines[i].function, label=lines[i].label or "?",
        instructions=sum(1 for line in lines[i:j + 1] if line.label is None),
        fmas=total["fma"], lanes=int(lanes[5:]), loads=total["load"], stores=total["store"],
        stack_loads=total["stack_load"], stack_stores=total["stack_store"], prefetches=total["prefetch"],
    )


def hot_loop(asm: str) -> HotLoop:
    """The innermost loop of packed FP32 FMAs with the most of them, counted per iteration.

    Raises
    ------
    AsmError
        Assembly of an unknown architecture, or no loop holding a packed FP32 FMA.
    """
    lines, per_line, inner = _inner_loops(asm)
    if not inner:
        raise AsmError("no loop holding a packed FP32 FMA in this assembly")
    return _hot(lines, per_line, max(inner, key=lambda ij: (_fmas(per_line, ij), -ij[0])))


def hot_loops(asm: str) -> dict[str, HotLoop]:
    """The hot loop of each TVM function of a module's assembly (one compiled model holds many), by
    :func:`owner` name; a parallel lambda's loops count for the function printed before it (TVM prints each
    function's lambdas right after it). Functions without a loop of packed FMAs are left out.

    Raises
    ------
    AsmError
        Assembly of an unknown architecture.
    """
    lines, per_line, inner = _inner_loops(asm)
    owners: dict[str, str] = {}
    last = "?"
    for line in lines:
        if line.function not in owners:
            owners[line.function] = last if _LAMBDA.search(line.function) else owner(line.function)
            last = owners[line.function]
    best: dict[str, tuple[int, int]] = {}
    for loop in inner:
        name = owners[lines[loop[0]].function]
        if name not in best or _fmas(per_line, loop) > _fmas(per_line, best[name]):
            best[name] = loop
    return {name: _hot(lines, per_line, loop) for name, loop in best.items()}


__all__ = ["AsmError", "HotLoop", "hot_loop", "hot_loops", "owner"]
