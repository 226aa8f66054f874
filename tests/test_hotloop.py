"""The hot-loop reader: counts on hand-written assembly of both architectures, then on real kernels.

Real kernels are compiled, never run, so every facts profile's target is read on any host: the rules' register
tile (``mr`` rows of ``jpack / vector`` vectors) must come out of x86 assembly as ``mr + jpack / vector`` loads per
``mr * jpack / vector`` FMAs (AArch64's paired loads and by-element FMAs need fewer), with nothing on the stack.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from matmul.core.hotloop import AsmError, HotLoop, hot_loop, hot_loops, owner
from matmul.core.registry import schedule
from matmul.core.runner import build, build_cached, compile_module
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.schedules.rules import decide
from tests.profiles import NEON, PROFILES, RUNNABLE

#: One function, an outer loop around an inner one; the inner one has 3 FMAs (one reading the stack), a
#: broadcast, a vector load, a store to C, a spill store, a prefetch and a lea (no access).
X86 = """\
\t.text
\t.type\tkern,@function
kern:
\tpushq\t%rbx
.LBB0_1:                                # outer
\tmovq\t8(%rsi), %rax
\t.p2align\t4
.LBB0_2:                                # inner
\tvbroadcastss\t-4(%r8), %zmm16         # a comment with (%rsp) in it
\tvmovups\t(%rdx,%rdi), %zmm28
\tvfmadd231ps\t%zmm1, %zmm16, %zmm28
\tvfmadd231ps\t128(%rsp), %zmm16, %zmm29
\tvfmadd213ps\t%zmm2, %zmm16, %zmm30
\tvmovups\t%zmm28, -192(%rdx,%rdi)
\tvmovups\t%zmm30, 64(%rsp)
\tprefetcht0\t512(%r9)
\tleaq\t(%rax,%rbx), %rcx
\taddq\t$64, %rdi
\tjne\t.LBB0_2
\taddq\t%rax, (%rbx)
\tcmpq\t(%rcx), %rax
\tjne\t.LBB0_1
\tpopq\t%rbx
\tretq
"""

AARCH64 = """\
\t.text
\t.type\tkern,%function
kern:
\tstp\tx29, x30, [sp, #-16]!
\tmov\tx29, sp
.LBB0_1:
\tld1r\t{ v2.4s }, [x2]
\tldr\tq1, [x1, #16]
\tldr\tq3, [x29, #32]                  // a frame-pointer reload
\tfmla\tv0.4s, v1.4s, v2.4s
\tfmla\tv4.4s, v3.4s, v2.s[0]
\tstr\tq0, [x3], #16
\tprfm\tpldl1keep, [x1, #256]
\tsubs\tx4, x4, #1
\tb.ne\t.LBB0_1
\tldp\tx29, x30, [sp], #16
\tret
"""


def test_x86_counts_the_innermost_fma_loop():
    loop = hot_loop(X86)
    assert loop == HotLoop(function="kern", label=".LBB0_2", instructions=11, fmas=3, lanes=16, loads=3, stores=2,
                           stack_loads=1, stack_stores=1, prefetches=1)
    assert loop.spills and loop.loads_per_fma == 1.0
    assert loop.as_dict()["loads_per_fma"] == 1.0 and "1 loads and 1 stores on the stack" in loop.describe()


def test_x86_read_modify_write_and_compare_read_memory():
    # Without the inner loop, the outer one is the innermost loop with an FMA.
    asm = X86.replace("\tjne\t.LBB0_2\n", "")
    loop = hot_loop(asm)
    assert loop.label == ".LBB0_1"
    # movq 8(%rsi) + the inner body's 3 + addq's read + cmpq's read; stores: the inner 2 + addq's write.
    assert (loop.loads, loop.stores) == (6, 3)


def _x86(body: str) -> str:
    """A one-block loop around ``body`` with one FMA, in a function of its own."""
    return (".type\tf,@function\nf:\n.LBB9_1:\n\tvfmadd231ps\t%zmm1, %zmm2, %zmm3\n" + body +
            "\tjne\t.LBB9_1\n\tretq\n")


@pytest.mark.parametrize("body, loads, stores", [
    ("\tvmovups\t(%rax), %zmm0 {%k1} {z}\n", 1, 0),      # masked load
    ("\tvmovups\t%zmm0, (%rax) {%k1}\n", 0, 1),          # masked store
    ("\tvaddps\t(%rax){1to16}, %zmm1, %zmm2\n", 1, 0),   # embedded broadcast
    ("\tvmovaps\t.LCPI0_0(%rip), %zmm4\n", 1, 0),        # a constant
    ("\tvgatherdps\t(%rax,%zmm1,4), %zmm2 {%k1}\n", 1, 0),
    ("\tvscatterdps\t%zmm2, (%rax,%zmm1,4) {%k1}\n", 0, 1),
    ("\tvmaskmovps\t%ymm0, %ymm1, (%rax)\n", 0, 1),
    ("\tvcompressps\t%zmm0, (%rax) {%k1}\n", 0, 1),
    ("\tsete\t(%rdi)\n", 0, 1),                          # one operand, written
    ("\tincl\t(%rax)\n", 1, 1),                          # one operand, read and written
    ("\tpopq\t8(%rax)\n", 0, 1),
    ("\tcallq\t*8(%rax)\n", 1, 0),
    ("\tbtsq\t$3, (%rax)\n", 1, 1),                      # bts writes; bt only reads
    ("\tbtq\t$3, (%rax)\n", 1, 0),
    ("\tcmpxchgq\t%rcx, (%rax)\n", 1, 1),                # cmpxchg writes; cmp only reads
    ("\tcmpq\t%rcx, (%rax)\n", 1, 0),
    ("\tclflush\t(%rax)\n", 0, 0),
])
def test_x86_memory_forms(body, loads, stores):
    loop = hot_loop(_x86(body))
    assert (loop.loads, loop.stores) == (loads, stores)


def test_a_branch_inside_the_loop_sums_both_sides_and_an_out_of_line_block_belongs_to_it():
    # head: 8 FMAs, then either .LBB0_3 (2 FMAs) or out of line to .LBB0_2 (a store) and back to .LBB0_3;
    # the latch .LBB0_4 (1 FMA) branches back to the head: one loop of 11 FMAs, not the span .LBB0_2-.LBB0_3
    fma = "\tvfmadd231ps\t%zmm1, %zmm2, %zmm3\n"
    asm = (".type\tf,@function\nf:\n.LBB0_1:\n" + fma * 8 + "\tjne\t.LBB0_2\n.LBB0_3:\n" + fma * 2 +
           "\tjmp\t.LBB0_4\n.LBB0_2:\n\tvmovups\t%zmm3, (%rax)\n\tjmp\t.LBB0_3\n.LBB0_4:\n" + fma +
           "\tjne\t.LBB0_1\n\tretq\n")
    loop = hot_loop(asm)
    assert (loop.label, loop.fmas, loop.stores) == (".LBB0_1", 11, 1)
    # two back edges to one header are one loop: 4 FMAs on one path, 8 more on the other
    two = (".type\tf,@function\nf:\n.LBB0_1:\n" + fma * 4 + "\tjne\t.LBB0_1\n" + fma * 8 +
           "\tjne\t.LBB0_1\n\tretq\n")
    assert hot_loop(two).fmas == 12
    # a block the entry never reaches, jumping into the loop, is not part of it
    dead = (".type\tf,@function\nf:\n.LBB0_1:\n" + fma + ".LBB0_2:\n" + fma + "\tjne\t.LBB0_1\n\tretq\n"
            ".LBB0_9:\n\tvmovups\t%zmm3, (%rax)\n\tjmp\t.LBB0_2\n")
    assert (hot_loop(dead).fmas, hot_loop(dead).stores) == (2, 0)


def test_a_wide_main_loop_outranks_a_longer_narrow_tail():
    wide = _x86("\tvfmadd231ps\t%zmm4, %zmm2, %zmm5\n")  # 2 FMAs of 16 lanes
    narrow = _x86("").replace("f,@function\nf:", "g,@function\ng:").replace(".LBB9_", ".LBB8_").replace(
        "\tvfmadd231ps\t%zmm1, %zmm2, %zmm3\n", "\tvfmadd231ps\t%ymm1, %ymm2, %ymm3\n" * 3)  # 3 of 8
    loop = hot_loop(narrow + wide)
    assert (loop.function, loop.lanes, loop.fmas) == ("f", 16, 2)
    assert hot_loop(_x86("").replace("vfmadd231ps\t%zmm1", "vfmadd231pd\t%zmm1")).lanes == 8  # FP64: 8 a zmm


def test_rbp_is_the_stack_only_where_the_function_set_it_up():
    no_frame = X86.replace("128(%rsp)", "128(%rbp)").replace("64(%rsp)", "64(%rbp)")
    assert not hot_loop(no_frame).spills  # rbp as a general register
    framed = no_frame.replace("\tpushq\t%rbx\n", "\tpushq\t%rbp\n\tmovq\t%rsp, %rbp\n")
    assert (hot_loop(framed).stack_loads, hot_loop(framed).stack_stores) == (1, 1)


def test_aarch64_counts_and_immediates_are_not_comments():
    loop = hot_loop(AARCH64)
    assert loop == HotLoop(function="kern", label=".LBB0_1", instructions=9, fmas=2, lanes=4, loads=3, stores=1,
                           stack_loads=1, stack_stores=0, prefetches=1)


def test_aarch64_frames_set_up_by_add_prefetches_fmls_and_literal_loads():
    asm = (AARCH64.replace("\tmov\tx29, sp\n", "\tadd\tx29, sp, #16\n")
           .replace("\tprfm\tpldl1keep, [x1, #256]\n", "\tprfum\tpldl1keep, [x1, #-8]\n")
           .replace("\tfmla\tv4.4s, v3.4s, v2.s[0]\n", "\tfmls\tv4.4s, v3.4s, v2.s[0]\n\tldr\tq5, .LCPI0_0\n"))
    loop = hot_loop(asm)
    assert (loop.fmas, loop.loads, loop.stack_loads, loop.prefetches) == (2, 4, 1, 1)


def test_the_architecture_comes_from_instructions_or_is_named():
    decoy = AARCH64.replace("\t.text\n", '\t.text\n\t.asciz\t"bad value %eax"\n') + "// %rhs\n"
    assert hot_loop(decoy).lanes == 4  # a string and a comment are not registers
    assert hot_loop(AARCH64, arch="arm64").fmas == 2
    with pytest.raises(AsmError, match="no hot-loop reader for 'riscv64' assembly; choose from: aarch64"):
        hot_loop(AARCH64, arch="riscv64")


def test_the_loop_with_the_most_fmas_wins():
    second = X86.replace("kern", "other").replace(".LBB0_", ".LBB1_").replace(
        "\tvfmadd213ps\t%zmm2, %zmm16, %zmm30\n", "\tvfmadd213ps\t%zmm2, %zmm16, %zmm30\n" * 3)
    loop = hot_loop(X86 + second)
    assert (loop.function, loop.fmas) == ("other", 5)


def test_a_model_library_gives_each_function_its_own_loop():
    # TVM prints a function's parallel lambdas right after it: their loops are that function's
    body = X86.replace("kern", ".L__tvm_parallel_lambda").replace(".LBB0_", ".LBB1_")
    second = X86.replace("kern", ".L__tvm_parallel_lambda.7").replace(".LBB0_", ".LBB3_").replace(
        "\tvfmadd213ps\t%zmm2, %zmm16, %zmm30\n", "")
    asm = ("\t.type\t__tvm_ffi_scores,@function\n__tvm_ffi_scores:\n\tretq\n"
           "\t.type\tscores_compute_,@function\nscores_compute_:\n\tretq\n" + body +
           "\t.type\tsoftmax_compute_,@function\nsoftmax_compute_:\n\tretq\n"
           "\t.type\tcontext_compute_,@function\ncontext_compute_:\n\tretq\n" + second)
    loops = hot_loops(asm)
    assert set(loops) == {"scores", "context"}  # softmax holds no FMA loop: left out
    assert (loops["scores"].fmas, loops["context"].fmas) == (3, 2)
    assert loops["scores"].function == ".L__tvm_parallel_lambda" and owner("__tvm_ffi_x_compute_") == "x"


@pytest.mark.parametrize("asm, why", [
    ("\t.text\nf:\n\tmov\tr0, r1\n", "neither x86-64"),
    (X86.replace("vfmadd231ps", "vmulps").replace("vfmadd213ps", "vaddps"), "no loop holding a packed FMA"),
])
def test_bad_assembly_is_named(asm, why):
    with pytest.raises(AsmError, match=why):
        hot_loop(asm)


#: Every facts profile's target (AArch64's cross-compiled: the facts name its triple) and the targets this host
#: runs; the assembly is printed, never run, so none needs this host's CPU.
TARGETS = {**{k: v for k, v in PROFILES.items() if k != "12-threads"}, **RUNNABLE,
           "neon": dataclasses.replace(NEON, extra_target=(("mtriple", json.dumps("aarch64-linux-gnu")),))}


def _compiled_hot_loop(variant, shape, facts):
    return hot_loop(compile_module(schedule(variant, shape, facts=facts), facts.target()).mod.inspect_source("asm"))


@pytest.mark.parametrize("profile", sorted(TARGETS))
@pytest.mark.parametrize("kernel, M", [("qkv", 16), ("mlp_expand", 128), ("mlp_reduce", 384)])
def test_rule_based_register_tile_reads_as_planned(profile, kernel, M):
    facts = TARGETS[profile]
    shape = kernel_shape(kernel, M)
    c = decide(shape, facts).config
    vectors = c.jpack // c.vector
    planned = (c.mr + vectors) / (c.mr * vectors)  # one broadcast of A per row, one load of B per vector
    loop = _compiled_hot_loop("rule_based", shape, facts)
    assert loop.lanes == facts.simd_lanes_fp32
    assert not loop.spills, loop.describe()
    assert loop.fmas % (c.mr * vectors) == 0, loop.describe()
    if facts.arch == "x86_64":
        assert loop.loads_per_fma == pytest.approx(planned), (c, loop.describe())
    else:  # AArch64 loads two B vectors with one ldp and multiplies by a lane of A (fmla by element): fewer
        assert 0 < loop.loads_per_fma <= planned, (c, loop.describe())


def test_a_kernel_reads_its_hot_loop_once():
    kernel = build_cached("rule_based", kernel_shape("qkv", 16))
    loop = kernel.hot_loop()
    assert loop == hot_loop(kernel.source("asm"))
    assert kernel.hot_loop() is loop  # a second ask (or a second build of the same code) reads no assembly
    assert build("rule_based", kernel_shape("qkv", 16)).hot_loop() is loop
    baseline = build_cached("baseline", kernel_shape("qkv", 16))
    errors = []
    for _ in range(2):
        with pytest.raises(AsmError, match="no loop holding a packed FMA") as caught:
            baseline.hot_loop()
        errors.append(caught.value)
    assert errors[0] is not errors[1]  # a fresh error each time: a cached one would keep every raiser's frames


def test_a_candidate_saves_its_code_digest_and_hot_loop_and_none_for_a_scalar_kernel():
    shape = kernel_shape("qkv", 16)
    described = prepare("rule_based", shape).describe()
    saved = described["hot_loop"]
    assert saved["fmas"] > 0 and saved["stack_loads"] == 0 and saved["loads_per_fma"] > 0
    # the code's digest: the same for a second build of the same schedule, another for another shape
    assert described["code"] == prepare("rule_based", shape, fresh=True).describe()["code"]
    assert described["code"] != prepare("rule_based", kernel_shape("qkv", 32)).describe()["code"]
    scalar = prepare("baseline", shape).describe()
    assert scalar["hot_loop"] is None and len(scalar["code"]) == 16
    assert {"hot_loop", "code"}.isdisjoint(prepare("numpy", shape).describe())  # a library's code is not ours
