"""PyTorch's matmul timed alone, back to back (scratch; see outputs.txt). Run from the repository root:

``.venv/bin/python <this file> deciles 16x768x3072``: 300 calls back to back, then 100 calls each after a 20 ms
sleep and 3 warm calls, their deciles in ms. ``... cv 16x768x3072``: 2000 calls; for samples of 1-32 calls their
CV and the standard deviation of the log ratio of consecutive samples (what a paired round sees).
"""
import sys
import time

import numpy as np
import torch

torch.set_num_threads(2)
mode, dims = sys.argv[1], sys.argv[2]
m, k, n = map(int, dims.split("x"))
a, b, c = torch.rand(m, k), torch.rand(k, n), torch.empty(m, n)


def timed(calls: int, sleep: float = 0.0, warm: int = 0) -> np.ndarray:
    ts = []
    for _ in range(calls):
        if sleep:
            time.sleep(sleep)
        for _ in range(warm):
            torch.matmul(a, b, out=c)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    return np.array(ts)


timed(20)
if mode == "deciles":
    print(dims, "alone ms deciles", np.round(np.quantile(timed(300) * 1e3, np.linspace(0, 1, 11)), 3))
    print(dims, "after sleep ms deciles", np.round(np.quantile(timed(100, 0.02, 3) * 1e3, np.linspace(0, 1, 11)), 3))
else:
    ts = timed(2000)
    for g in (1, 2, 4, 8, 16, 32):
        s = ts[: len(ts) // g * g].reshape(-1, g).mean(1)
        d = np.diff(np.log(s))
        print(f"calls/sample {g:2d}: cv {s.std() / s.mean() * 100:5.1f}%  consecutive log-ratio sd {d.std() * 100:5.1f}%")
