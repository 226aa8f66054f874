"""One shape's calls timed alone, back to back (scratch; see outputs.txt). Run from the repository root:
.venv/bin/python <this file> 16x768x3072 [variants]"""
import time, numpy as np, torch, sys
torch.set_num_threads(2)
m, k, n = map(int, sys.argv[1].split("x"))
a = torch.rand(m, k); b = torch.rand(k, n); c = torch.empty(m, n)
for _ in range(20): torch.matmul(a, b, out=c)
ts = []
for _ in range(300):
    t0 = time.perf_counter(); torch.matmul(a, b, out=c); ts.append(time.perf_counter() - t0)
ts = np.array(ts) * 1e3
print(sys.argv[1], "alone ms deciles", np.round(np.quantile(ts, np.linspace(0, 1, 11)), 3))
# with sleeps between (a pool switch)
ts = []
for _ in range(100):
    time.sleep(0.02)
    for _ in range(3): torch.matmul(a, b, out=c)
    t0 = time.perf_counter(); torch.matmul(a, b, out=c); ts.append(time.perf_counter() - t0)
ts = np.array(ts) * 1e3
print(sys.argv[1], "after sleep ms deciles", np.round(np.quantile(ts, np.linspace(0, 1, 11)), 3))
