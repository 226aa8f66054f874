"""Time ``np.matmul`` in a process that loads NumPy and nothing else.

Run as a script (not ``-m``, which would import the ``matmul`` package and so
TVM): reads ``{"shapes": [[M, K, N], ...], "layout", "threads", "calls"}`` as
JSON on stdin, writes ``{"medians": [seconds, ...]}``. The protocol (seeded
float32 inputs in the suite's operand memory, warm-up calls, median of
back-to-back calls) matches the suite's, so the two figures differ only by
what else shares the process. The operand memory comes from
``matmul/core/memory.py``, loaded by its path: it needs only NumPy.
"""

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("_operand_memory", Path(__file__).parents[1] / "core" / "memory.py")
memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory)


def main() -> int:
    req = json.load(sys.stdin)
    calls = int(req["calls"])
    rng = np.random.default_rng(0)
    medians = []
    for m, k, n in req["shapes"]:
        a = memory.operand_copy(rng.standard_normal((m, k), dtype=np.float32))
        b = memory.operand_copy(rng.standard_normal((k, n) if req["layout"] == "NN" else (n, k), dtype=np.float32))
        rhs = b if req["layout"] == "NN" else b.T
        c = memory.operand_empty((m, n), np.float32)
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
