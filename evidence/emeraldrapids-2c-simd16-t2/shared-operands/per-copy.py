"""Identical copies of ``rule_based`` reading one shared A and B, each its own C, timed in one group of the
suite's rounds; then again with the C buffers passed round (copy i writes copy i+1's C). Run from the repository
root, for example:

    python evidence/emeraldrapids-2c-simd16-t2/shared-operands/per-copy.py 1x4096x11008 6
"""
import statistics
import sys

import numpy as np

from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds

M, K, N = map(int, sys.argv[1].split("x"))
shape = MatmulShape(M, K, N)
n = int(sys.argv[2])
cands = [prepare("rule_based", shape, fresh=True) for _ in range(n)]
ta, tb, _ = cands[0].args
tcs = [c.args[2] for c in cands]
for shift, label in ((0, "own C:    "), (1, "C rotated:")):
    for i, c in enumerate(cands):
        f, tc = c.kernel.func, tcs[(i + shift) % n]
        c.call = lambda f=f, tc=tc: f(ta, tb, tc)
    print(label, "C mod 4096:", [int(np.from_dlpack(tcs[(i + shift) % n]).ctypes.data % 4096) for i in range(n)])
    r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, budget_s=10))
    print(label, " ".join(f"{statistics.median(s) * 1e3:.3f}" for s in r.samples), flush=True)
