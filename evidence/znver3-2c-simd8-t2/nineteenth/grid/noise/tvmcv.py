"""One shape's calls timed alone, back to back (scratch; see outputs.txt). Run from the repository root:
.venv/bin/python <this file> 16x768x3072 [variants]"""
import time, numpy as np, sys
from matmul.core.workloads import MatmulShape
from matmul.measure.candidates import prepare
m, k, n = map(int, sys.argv[1].split("x"))
for name in sys.argv[2].split(","):
    c = prepare(name, MatmulShape(M=m, K=k, N=n))
    with c.pool():
        for _ in range(20): c.call()
        ts = []
        for _ in range(2000):
            t0 = time.perf_counter(); c.call(); ts.append(time.perf_counter() - t0)
    ts = np.array(ts)
    for g in (1, 8, 32):
        s = ts[: len(ts) // g * g].reshape(-1, g).mean(1)
        d = np.diff(np.log(s))
        print(f"{name} calls/sample {g:2d}: median {np.median(s)*1e3:.3f} ms cv {s.std()/s.mean()*100:5.1f}%  consecutive log-ratio sd {d.std()*100:5.1f}%")
