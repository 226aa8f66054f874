"""One compiled kernel with its operands in NumPy's memory (``host_tensor``: transparent huge pages from 4 MiB
where the kernel allows) and in TVM's own (4 KiB pages), beside an A/A copy and NumPy, in the suite's
interleaved rounds. Run from the repository root:  python evidence/.../huge-pages/measure.py out.csv
"""
import csv
import dataclasses
import statistics
import sys

import tvm

from matmul import MatmulShape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import RoundSettings, time_rounds

SHAPES = ["1x768x30522", "1x1024x50257", "1x4096x4096", "1x4096x11008", "16x768x768", "128x768x3072",
          "384x3072x768"]


def thp_kib() -> int:
    return int(open("/proc/self/smaps_rollup").read().split("AnonHugePages:")[1].split()[0])


rows = []
for spec in SHAPES:
    M, K, N = map(int, spec.split("x"))
    shape = MatmulShape(M, K, N)
    huge = prepare("rule_based", shape, fresh=True)
    args = tuple(tvm.runtime.tensor(t.numpy()) for t in huge.args)  # the same values in TVM's own memory
    func = huge.kernel.func
    small = dataclasses.replace(huge, call=lambda: func(*args), args=args)
    cands = [huge, small, prepare("rule_based", shape, fresh=True), prepare("numpy", shape)]
    r = time_rounds(cands, anchor=0, settings=RoundSettings(min_rounds=12, budget_s=20, ci_width=0.03))
    med = [statistics.median(s) for s in r.samples]
    row = {"shape": spec, "b_mib": round(K * N * 4 / 2**20, 1), "rounds": len(r.samples[0]),
           "numpy_pages_us": round(med[0] * 1e6, 1), "tvm_pages_us": round(med[1] * 1e6, 1),
           "aa_us": round(med[2] * 1e6, 1), "numpy_us": round(med[3] * 1e6, 1),
           "numpy_pages_speedup": round(med[1] / med[0], 3), "aa": round(med[0] / med[2], 3),
           "over_numpy_numpy_pages": round(med[3] / med[0], 2), "over_numpy_tvm_pages": round(med[3] / med[1], 2),
           "anon_huge_kib": thp_kib()}
    rows.append(row)
    print(row, flush=True)
    del cands, huge, small
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
