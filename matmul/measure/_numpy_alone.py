"""Time ``np.matmul`` in a process that loads NumPy and nothing else.

Run as a script (not ``-m``, which would import the ``matmul`` package and so
TVM): reads ``{"shapes": [[M, K, N], ...], "layout", "threads", "calls"}`` as
JSON on stdin, writes ``{"medians": [seconds, ...]}``. The protocol (seeded
float32 inputs, warm-up calls, median of back-to-back calls) matches the
suite's, so the two figures differ only by what else shares the process.
"""

import json
import statistics
import sys
import time

import numpy as np


def main() -> int:
    req = json.load(sys.stdin)
    calls = int(req["calls"])
    rng = np.random.default_rng(0)
    medians = []
    for m, k, n in req["shapes"]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n) if req["layout"] == "NN" else (n, k), dtype=np.float32)
        rhs = b if req["layout"] == "NN" else b.T
        c = np.empty((m, n), np.float32)
        for _ in range(3):
            np.matmul(a, rhs, out=c)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            np.matmul(a, rhs, out=c)
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    json.dump({"medians": medians}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
