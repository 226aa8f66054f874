"""Run from the repository root. Upper bound of packing A: the rules' kernel with A given pre-packed [M/mr, K, mr] vs as is (scratch)."""
import statistics, sys
import numpy as np
from tvm.s_tir import Schedule
from matmul.core.hardware import host_facts
from matmul.core.workloads import MatmulShape
from matmul.core.kernel import matmul_module, BLOCK
from matmul.core.runner import compile_module, host_tensor
from matmul.schedules.rules import decide
from matmul.schedules.rules.apply import apply_config
from matmul.measure.candidates import Candidate
from matmul.measure.interleave import time_interleaved
from matmul.measure.peak import peak_probe

facts = host_facts()
call, flops = peak_probe(facts)
probe = Candidate("peak", "ref", None, "NN", call, facts.runtime_threads, {})

def cand(shape, pack_a, name):
    cfg = decide(shape, facts).config
    sch = Schedule(matmul_module(shape))
    if pack_a:
        mr = cfg.mr
        sch.transform_layout(sch.get_sblock(BLOCK), ("read", 0), lambda i, k: (i // mr, k, i % mr))
    apply_config(sch, cfg, shape)
    exe = compile_module(sch, facts.target())
    f = exe["main"]
    a = np.random.rand(shape.M // cfg.mr, shape.K, cfg.mr).astype("float32") if pack_a else \
        np.random.rand(shape.M, shape.K).astype("float32")
    b = np.random.rand(shape.K, shape.N).astype("float32")
    c = np.zeros((shape.M, shape.N), "float32")
    ta, tb, tc = host_tensor(a), host_tensor(b), host_tensor(c)
    if pack_a:
        f(ta, tb, tc)
        ref = np.einsum("pkr,kn->prn", a, b).reshape(shape.M, shape.N)
        assert np.allclose(tc.numpy(), ref, rtol=1e-3, atol=1e-3), "wrong"
    return Candidate(name, "tvm", shape, "NN", lambda: f(ta, tb, tc), facts.runtime_threads, {})

for s in sys.argv[1].split(","):
    m, k, n = map(int, s.split("x"))
    shape = MatmulShape(M=m, K=k, N=n)
    cs = [cand(shape, False, "plain"), cand(shape, True, "apack"), cand(shape, False, "plain2")]
    ts = time_interleaved([probe] + cs, blocks=8, calls=5)
    gf = 2 * m * n * k
    row = [s]
    for c, t in zip(cs, ts[1:]):
        pct = statistics.median([gf / a / (flops / p) for a, p in zip(t, ts[0])])
        row.append(f"{c.name} {100*pct:.1f}%")
    print("  ".join(row), flush=True)
