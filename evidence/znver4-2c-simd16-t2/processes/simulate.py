"""What pooling P processes buys a comparison between runs, from per-process measurements alone.

    python evidence/znver4-2c-simd16-t2/processes/simulate.py per-process/*.csv

Each CSV is one fresh process (``../hot-loops/measure.py child``): per BERT shape, the best time of
MetaSchedule's kernel and of rule_based's, timed side by side. MetaSchedule's ratio to rule_based is drawn
once per process. A "run" of P processes reads the fastest of its P draws (the pooled best time); two runs
are made of disjoint random sets of P processes, and a shape agrees when the two runs' ratios lie within 5%.
Prints, per P, the number of the 24 shapes that agree: mean and 10th/50th/90th percentile over 400 draws.
The process is the only noise here (within a process the kernel's best time is tight), so this is what
--processes P can do at most.
"""

import sys

import numpy as np
import pandas as pd

d = pd.concat([pd.read_csv(f).assign(process=f) for f in sys.argv[1:]])
d["ratio"] = d.metaschedule_best_us / d.rule_based_best_us
rng = np.random.default_rng(0)
n = d.process.nunique()
print(f"{n} processes; shapes agreeing within 5% between two runs of P processes each (of 24)")
for P in [p for p in (1, 2, 3, 4, 6) if 2 * p <= n]:
    agree = []
    for _ in range(400):
        ok = 0
        for _, g in d.groupby(["kernel", "M"]):
            v = g.ratio.to_numpy()[rng.permutation(len(g))]
            ok += abs(v[:P].min() / v[P:2 * P].min() - 1) <= 0.05
        agree.append(ok)
    lo, mid, hi = np.percentile(agree, [10, 50, 90])
    print(f"P = {P}: mean {np.mean(agree):.1f}, 10th {lo:.0f}, median {mid:.0f}, 90th {hi:.0f}")
