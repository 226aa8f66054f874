"""Run from the repository root. R5's per-call packing with the NEXT block's B lines prefetched during the current block's FMAs (scratch)."""
import statistics, sys
import numpy as np
import tvm.tirx as tirx
from tvm.s_tir import Schedule
from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.core.kernel import matmul_module
from matmul.core.runner import compile_module, host_tensor
from matmul.schedules.rules import decide
from matmul.schedules.rules.apply import apply_config
from matmul.measure.candidates import Candidate, prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.peak import peak_probe

facts = host_facts()
call, flops = peak_probe(facts)
probe = Candidate("peak", "ref", None, "NN", call, facts.runtime_threads, {})

def cand(shape, level, name):
    cfg = decide(shape, facts).config
    assert cfg.pack_b and cfg.order == "jfirst", cfg
    sch = Schedule(matmul_module(shape))
    b = sch.get(sch.get_sblock("C")).reads[1].source
    apply_config(sch, cfg, shape)
    if level is not None:
        task, ko, jm, im, *_ = sch.get_loops(sch.get_sblock("C_update"))
        t, k, j, i = (sch.get(l).loop_var for l in (task, ko, jm, im))
        tasks_n = shape.N // cfg.tn
        nko = shape.K // cfg.tk
        ntasks = (shape.M // cfg.tm) * tasks_n
        row_lines = -(-cfg.tn // 16)
        lines = cfg.tk * row_lines
        tiles = cfg.tm // cfg.mr
        steps = (cfg.tn // cfg.jpack) * tiles
        share = -(-lines // steps)
        p = tirx.Var("pf", i.ty)
        line = (j * tiles + i) * share + p
        last = k + 1 >= nko
        nt = tirx.Select(last, t + 1, t)
        nk = tirx.Select(last, tirx.const(0, k.ty), k + 1)
        row = nk * cfg.tk + tirx.floordiv(line, row_lines)
        col = tirx.floormod(nt, tasks_n) * cfg.tn + tirx.floormod(line, row_lines) * 16
        fetch = tirx.Evaluate(tirx.call_intrin("void", "tirx.prefetch",
                              tirx.address_of(tirx.BufferLoad(b, [row, col])), 0, level, 1))
        guarded = tirx.IfThenElse(tirx.all(line < lines, nt < ntasks), fetch, None)
        loop = tirx.For(p, tirx.const(0, str(i.ty)), tirx.const(share, str(i.ty)), tirx.ForKind.SERIAL, guarded)
        st = sch.get(im)
        sch.state.replace(sch.get_sref(im), tirx.For(st.loop_var, st.min, st.extent, st.kind,
                          tirx.SeqStmt([loop, st.body]), st.thread_binding, st.annotations), {})
    exe = compile_module(sch, facts.target())
    f = exe["main"]
    a = np.random.rand(shape.M, shape.K).astype("float32")
    bb = np.random.rand(shape.K, shape.N).astype("float32")
    c = np.zeros((shape.M, shape.N), "float32")
    ta, tb, tc = host_tensor(a), host_tensor(bb), host_tensor(c)
    f(ta, tb, tc)
    assert np.allclose(tc.numpy(), a @ bb, rtol=1e-3, atol=1e-3), "wrong"
    return Candidate(name, "tvm", shape, "NN", lambda: f(ta, tb, tc), facts.runtime_threads, {})

levels = [int(x) for x in sys.argv[2].split(",")]
for s in sys.argv[1].split(","):
    m, k, n = map(int, s.split("x"))
    shape = MatmulShape(M=m, K=k, N=n)
    cs = [cand(shape, None, "plain")] + [cand(shape, l, f"L{l}") for l in levels] + [cand(shape, None, "plain2")]
    cs.append(prepare("rule_based_prepacked", shape, facts=facts))
    ts = time_interleaved([probe] + cs, blocks=int(sys.argv[3]) if len(sys.argv) > 3 else 8, calls=5)
    row = [s]
    for c, t in zip(cs, ts[1:]):
        r = statistics.median([a / b for a, b in zip(ts[1], t)])
        row.append(f"{c.name} {r:.3f}")
    gf = 2 * m * n * k
    row.append(f"plain {100*statistics.median([gf / a / (flops / p) for a, p in zip(ts[1], ts[0])]):.1f}% peak")
    print("  ".join(row), flush=True)
