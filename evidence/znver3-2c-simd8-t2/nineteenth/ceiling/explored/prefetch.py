"""R5's per-call packing of B with software prefetches added (scratch; see outputs.txt). Run from the repository root:

``.venv/bin/python <this file> copy SHAPES DISTANCES [BLOCKS]``: the copy prefetches B's row D rows ahead.
``... next SHAPES LEVELS [BLOCKS]``: the next block's B lines are prefetched (to L2: 2, or L1: 3), a share at the
head of each row tile while the current block's FMAs run; rule_based_prepacked timed beside.
SHAPES is ``MxKxN,...``; each row prints every variant's speedup over "plain" (the rules' kernel; "plain2" is a
second build of it, the A/A).
"""
import statistics
import sys

import numpy as np
import tvm.tirx as tirx
from tvm.s_tir import Schedule

from matmul.core.hardware import host_facts
from matmul.core.kernel import matmul_module
from matmul.core.runner import compile_module, host_tensor
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import Candidate, prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.peak import peak_probe
from matmul.schedules.rules import decide
from matmul.schedules.rules.apply import apply_config

facts = host_facts()
call, flops = peak_probe(facts)
probe = Candidate("peak", "ref", None, "NN", call, facts.runtime_threads, {})


def fetch_at(b, row, col, level: int):
    return tirx.Evaluate(tirx.call_intrin("void", "tirx.prefetch", tirx.address_of(tirx.BufferLoad(b, [row, col])),
                                          0, level, 1))


def in_copy(sch, cfg, shape, b, dist: int) -> None:
    """Prefetch every line of B's row ``dist`` rows ahead at the head of each row of R5's copy."""
    task, ko, ax0, _, _ = sch.get_loops(sch.get_sblock("B_global"))
    t, k, r = (sch.get(loop).loop_var for loop in (task, ko, ax0))
    p = tirx.Var("pf", r.ty)
    row = tirx.min(k * cfg.tk + r + dist, shape.K - 1)
    col = tirx.floormod(t, shape.N // cfg.tn) * cfg.tn + p * 16
    loop = tirx.For(p, tirx.const(0, str(r.ty)), tirx.const(-(-cfg.tn // 16), str(r.ty)), tirx.ForKind.UNROLLED,
                    fetch_at(b, row, col, 3))
    _prepend(sch, ax0, loop)


def next_block(sch, cfg, shape, b, level: int) -> None:
    """Prefetch the next (task, ko) block's lines, a share at the head of each (j-pack, row tile) step."""
    task, ko, jm, im, *_ = sch.get_loops(sch.get_sblock("C_update"))
    t, k, j, i = (sch.get(loop).loop_var for loop in (task, ko, jm, im))
    tasks_n, nko = shape.N // cfg.tn, shape.K // cfg.tk
    ntasks = (shape.M // cfg.tm) * tasks_n
    row_lines = -(-cfg.tn // 16)
    lines, tiles = cfg.tk * row_lines, cfg.tm // cfg.mr
    share = -(-lines // ((cfg.tn // cfg.jpack) * tiles))
    p = tirx.Var("pf", i.ty)
    line = (j * tiles + i) * share + p
    last = k + 1 >= nko
    nt, nk = tirx.Select(last, t + 1, t), tirx.Select(last, tirx.const(0, k.ty), k + 1)
    row = nk * cfg.tk + tirx.floordiv(line, row_lines)
    col = tirx.floormod(nt, tasks_n) * cfg.tn + tirx.floormod(line, row_lines) * 16
    guarded = tirx.IfThenElse(tirx.all(line < lines, nt < ntasks), fetch_at(b, row, col, level), None)
    _prepend(sch, im, tirx.For(p, tirx.const(0, str(i.ty)), tirx.const(share, str(i.ty)), tirx.ForKind.SERIAL,
                               guarded))


def _prepend(sch, loop_rv, stmt) -> None:
    st = sch.get(loop_rv)
    sch.state.replace(sch.get_sref(loop_rv), tirx.For(st.loop_var, st.min, st.extent, st.kind,
                                                      tirx.SeqStmt([stmt, st.body]), st.thread_binding,
                                                      st.annotations), {})


def cand(shape, mode: str, arg: int | None, name: str) -> Candidate:
    cfg = decide(shape, facts).config
    assert cfg.pack_b and cfg.order == "jfirst", cfg
    sch = Schedule(matmul_module(shape))
    b = sch.get(sch.get_sblock("C")).reads[1].source
    apply_config(sch, cfg, shape)
    if arg is not None:
        (in_copy if mode == "copy" else next_block)(sch, cfg, shape, b, arg)
    f = compile_module(sch, facts.target())["main"]
    a = np.random.rand(shape.M, shape.K).astype("float32")
    bb = np.random.rand(shape.K, shape.N).astype("float32")
    ta, tb, tc = host_tensor(a), host_tensor(bb), host_tensor(np.zeros((shape.M, shape.N), "float32"))
    f(ta, tb, tc)
    assert np.allclose(tc.numpy(), a @ bb, rtol=1e-3, atol=1e-3), "wrong"
    return Candidate(name, "tvm", shape, "NN", lambda: f(ta, tb, tc), facts.runtime_threads, {})


mode, args = sys.argv[1], [int(x) for x in sys.argv[3].split(",")]
for s in sys.argv[2].split(","):
    m, k, n = map(int, s.split("x"))
    shape = MatmulShape(M=m, K=k, N=n)
    label = "pf" if mode == "copy" else "L"
    cs = [cand(shape, mode, None, "plain")] + [cand(shape, mode, x, f"{label}{x}") for x in args]
    cs.append(cand(shape, mode, None, "plain2"))
    if mode == "next":
        cs.append(prepare("rule_based_prepacked", shape, facts=facts))
    ts = time_interleaved([probe] + cs, blocks=int(sys.argv[4]) if len(sys.argv) > 4 else 8, calls=5)
    row = [s] + [f"{c.name} {statistics.median([a / b for a, b in zip(ts[1], t)]):.3f}" for c, t in zip(cs, ts[1:])]
    gf = 2 * m * n * k
    row.append(f"plain {100 * statistics.median([gf / a / (flops / p) for a, p in zip(ts[1], ts[0])]):.1f}% peak")
    print("  ".join(row), flush=True)
