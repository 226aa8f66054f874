"""Copies of one kernel, and of NumPy and PyTorch, each with operands of its own, timed in one interleaved group.

    python copies.py 16x768x768 [--small-pages]

Prints each copy's median over the first's (a fresh build among them), per process. ``--small-pages`` gives
every operand ordinary 4 KiB pages (64-byte aligned NumPy memory), as the suite did before ``core.memory``.
"""
import sys

import numpy as np

import matmul.core.runner as runner
import matmul.measure.candidates as candidates
import matmul.measure.references as references
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds


def small_pages(x: np.ndarray) -> np.ndarray:
    raw = np.empty(x.nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    view = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    view[...] = x
    return view


if "--small-pages" in sys.argv:
    runner.operand_copy = candidates.operand_copy = small_pages
    references.operand_empty = lambda shape, dtype: small_pages(np.empty(shape, dtype))
m, k, n = map(int, sys.argv[1].split("x"))
shape = MatmulShape(m, k, n)
cands = ([prepare("rule_based", shape) for _ in range(3)] + [prepare("rule_based", shape, fresh=True)]
         + [prepare("numpy", shape) for _ in range(2)] + [prepare("torch", shape) for _ in range(2)])
r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=20, budget_s=8))
v = [x.value for x in r.ratios[1:]]
pages = "4KiB" if "--small-pages" in sys.argv else "huge"
print(f"{sys.argv[1]},{pages},{v[0]:.3f},{v[1]:.3f},{v[2]:.3f},{v[4] / v[3]:.3f},{v[6] / v[5]:.3f},{r.widest:.3f},{r.rounds}")
