"""An A/A pair (two separately built copies of ``rule_based``) and NumPy in one group of the suite's rounds,
each reading operands of its own (as the grid does) or one shared copy of A and B (each kernel its own C),
alternately, twice per shape. Run from the repository root:

    python evidence/emeraldrapids-2c-simd16-t2/shared-operands/measure.py out.csv [repeats]
"""
import csv
import statistics
import sys

import numpy as np

from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds
from matmul.measure.references import get_reference

SHAPES = ["1x11008x4096", "1x4096x11008", "1x4096x4096", "1x1024x4096", "7x4096x4096", "128x768x3072"]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
rows = []
for rep in range(repeats):
    for spec in SHAPES:
        M, K, N = map(int, spec.split("x"))
        shape = MatmulShape(M, K, N)
        for mode in ("own", "shared"):
            cands = [prepare("rule_based", shape, fresh=True), prepare("rule_based", shape, fresh=True),
                     prepare("numpy", shape)]
            if mode == "shared":  # the twin and NumPy read the first kernel's A and B
                ta, tb, _ = cands[0].args
                f, tc = cands[1].kernel.func, cands[1].args[2]
                cands[1].call = lambda f=f, tc=tc: f(ta, tb, tc)
                a, b = np.from_dlpack(ta), np.from_dlpack(tb)  # the same memory, as arrays
                cands[2].call, _ = get_reference("numpy").prepare(a, b, "NN", cands[2].threads)
            r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, budget_s=10, ci_width=0.03))
            med = [statistics.median(s) for s in r.samples]
            row = {"shape": spec, "repeat": rep, "mode": mode, "rb_ms": round(med[0] * 1e3, 4),
                   "aa_ms": round(med[1] * 1e3, 4), "numpy_ms": round(med[2] * 1e3, 4),
                   "aa_ratio": round(med[1] / med[0], 3), "rb_over_numpy": round(med[2] / med[0], 3),
                   "rounds": len(r.samples[0]), "b_mib": round(K * N * 4 / 2**20, 1)}
            rows.append(row)
            print(row, flush=True)
            with open(sys.argv[1], "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
