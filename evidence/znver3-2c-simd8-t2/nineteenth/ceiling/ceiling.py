"""How close to the FMA peak can a kernel get on this CPU? Percent of the peak probe timed in the same rounds.

``loop``: the rules' register tile (and others) on L1-resident A and B, repeated, so nothing but the tile's own
loop (its FMAs, B loads and A broadcasts) sets the pace; one private A, B and C per thread.
``kernels SHAPES VARIANTS``: whole kernels (``MxKxN,...`` and ``v1;v2;...``), each built fresh, beside the probe.
Every timed call, the probe's included, is repeated to last at least :data:`CALL_S`.

Run from the repository root: ``.venv/bin/python evidence/.../ceiling.py loop`` or
``... kernels 384x768x768 'rule_based;numpy'``.
"""

import dataclasses
import math
import statistics
import sys

import numpy as np
from tvm import te
from tvm.s_tir import Schedule

from matmul.core.hardware import host_facts
from matmul.core.runner import compile_module, host_tensor
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import Candidate, prepare
from matmul.measure.interleave import time_interleaved
from matmul.measure.peak import peak_probe
from matmul.measure.timing import median_seconds

FACTS = host_facts()
BLOCKS = 8
#: Each timed call of a case (the probe's too) lasts at least this long: a 50 us probe call and a 5 ms kernel call
#: timed side by side see different moments of a machine whose neighbours' load moves over milliseconds.
CALL_S = 0.005


def stretched(cand: Candidate, flops: float) -> tuple[Candidate, float]:
    """``cand`` with each call repeated enough times to last :data:`CALL_S`, and the flops of such a call."""
    once = median_seconds(cand.call, calls=5)
    reps = max(1, math.ceil(CALL_S / once))

    def call() -> None:
        for _ in range(reps):
            cand.call()
    return dataclasses.replace(cand, call=call), flops * reps


def probe() -> tuple[Candidate, float]:
    call, flops = peak_probe(FACTS)
    return stretched(Candidate("peak probe", "reference", None, "NN", call, FACTS.runtime_threads, {}), flops)


def tile_loop(mr: int, nv: int, k: int, repeats: int, unroll: int) -> tuple[Candidate, float]:
    """C[t] (mr x nv vectors) = sum over r < repeats, k of A[t] * B[t]: the tile's loop, A and B in L1."""
    threads, lanes = FACTS.runtime_threads, FACTS.simd_lanes_fp32
    n = nv * lanes
    a = te.placeholder((threads, mr, k), name="A")
    b = te.placeholder((threads, k, n), name="B")
    r, kk = te.reduce_axis((0, repeats), name="r"), te.reduce_axis((0, k), name="k")
    c = te.compute((threads, mr, n), lambda t, i, j: te.sum(a[t, i, kk] * b[t, kk, j], axis=[r, kk]), name="C")
    sch = Schedule(te.create_prim_func([a, b, c]))
    block = sch.get_sblock("C")
    t, i, j, rl, kl = sch.get_loops(block)
    jo, ji = sch.split(j, [None, lanes])
    ko, ku = sch.split(kl, [None, unroll])
    sch.reorder(t, rl, ko, ku, i, jo, ji)
    local = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(local, t)
    sch.parallel(t)
    sch.vectorize(ji)
    for loop in (jo, i, ku):
        sch.unroll(loop)
    sch.decompose_reduction(block, rl)
    func = compile_module(sch, FACTS.target())["main"]
    rng = np.random.default_rng(0)
    av, bv = (rng.random((threads, mr, k), "float32"), rng.random((threads, k, n), "float32"))
    ta, tb, tc = host_tensor(av), host_tensor(bv), host_tensor(np.zeros((threads, mr, n), "float32"))
    func(ta, tb, tc)
    want = repeats * np.einsum("tik,tkn->tin", av.astype("float64"), bv)
    if not np.allclose(tc.numpy(), want, rtol=1e-3):
        raise AssertionError(f"the {mr} x {nv} loop is wrong")
    name = f"{mr} x {nv} vectors, K {k}, unroll {unroll}"
    return stretched(Candidate(name, "tvm", None, "NN", lambda: func(ta, tb, tc), threads, {}),
                     2.0 * threads * mr * n * k * repeats)


def pct(times: list[float], flops: float, probe_times: list[float], probe_flops: float) -> float:
    """Median over rounds of the case's rate over the probe's rate in the same round, in percent."""
    return 100 * statistics.median([(flops / t) / (probe_flops / p) for t, p in zip(times, probe_times)])


def main(argv: list[str]) -> None:
    pc, pf = probe()
    print(f"profile {FACTS.profile}, {FACTS.runtime_threads} threads, {BLOCKS} mirrored rounds of 3 calls "
          f"of at least {CALL_S * 1e3:.0f} ms")
    if argv[0] == "loop":
        cases = [tile_loop(4, 3, 256, 200, 4), tile_loop(4, 3, 256, 200, 8), tile_loop(6, 2, 256, 200, 4),
                 tile_loop(4, 3, 64, 800, 4), tile_loop(4, 3, 256, 200, 4)]
        times = time_interleaved([pc] + [c for c, _ in cases], blocks=BLOCKS, calls=3)
        print(f"peak probe {statistics.median([pf / p for p in times[0]]) / 1e9:.0f} GFLOP/s in these rounds")
        for (c, flops), t in zip(cases, times[1:]):
            print(f"  {c.name:34s} {pct(t, flops, times[0], pf):5.1f}% of the probe")
        return
    shapes, variants = argv[1].split(","), argv[2].split(";")
    for s in shapes:
        m, k, n = map(int, s.split("x"))
        shape = MatmulShape(M=m, K=k, N=n)
        cands = [stretched(prepare(v, shape, facts=FACTS, fresh=True), 2.0 * m * n * k) for v in variants]
        times = time_interleaved([pc] + [c for c, _ in cands], blocks=BLOCKS, calls=3)
        row = "  ".join(f"{v} {pct(t, f, times[0], pf):5.1f}%" for v, (_, f), t in zip(variants, cands, times[1:]))
        print(f"  {s:16s} probe {statistics.median([pf / p for p in times[0]]) / 1e9:4.0f} GFLOP/s  {row}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
