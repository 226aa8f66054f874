"""Where a group's time goes: the waits for quiet at each pool switch, by the pool that was spinning.

    python settle.py 128x768x768 rule_based,rule_based,ml_guided,metaschedule,full,parallel_vec_j,numpy,torch

Run it with the libraries' own spin (OPENBLAS_THREAD_TIMEOUT=28 TVM_THREAD_POOL_SPIN_COUNT=300000 in the
environment) and with the suite's (nothing set: ``import matmul`` sets them).
"""
import statistics
import sys
import time

from matmul.core.pools import pool_spin
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.measure.timing import wait_for_quiet

m, k, n = map(int, sys.argv[1].split("x"))
names = sys.argv[2].split(",")
cands = [prepare(x, MatmulShape(m, k, n), fresh=i > 0 and x == names[0]) for i, x in enumerate(names)]
last, waits = [None], {}
for c in cands:
    def call(f=c.call, pool=c.kind if c.kind == "tvm" else c.name):
        last[0] = pool
        return f()
    c.call = call


def settle():
    t = time.perf_counter()
    out = wait_for_quiet()
    waits.setdefault(last[0], []).append(time.perf_counter() - t)
    return out


t0 = time.perf_counter()
r = time_rounds(cands, anchor=0, settings=RoundSettings(budget_s=10), settle=settle)
total = time.perf_counter() - t0
spent = sum(sum(w) for w in waits.values())
print(f"{sys.argv[1]} {pool_spin()}: {r.rounds} rounds in {total:.1f} s, {spent:.1f} s waiting; widest +-{r.widest:.3f}, "
      f"converged {r.converged}")
for pool, w in waits.items():
    if pool:
        print(f"  after {pool}: {len(w)} waits, median {1e3 * statistics.median(w):.0f} ms")
