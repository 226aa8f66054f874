"""One shape's calls timed alone, back to back (scratch; see outputs.txt). Run from the repository root:
.venv/bin/python <this file> 16x768x3072 [variants]"""
import time, numpy as np, torch, sys
torch.set_num_threads(2)
m, k, n = map(int, sys.argv[1].split("x"))
a = torch.rand(m, k); b = torch.rand(k, n); c = torch.empty(m, n)
for _ in range(20): torch.matmul(a, b, out=c)
ts = []
for _ in range(2000):
    t0 = time.perf_counter(); torch.matmul(a, b, out=c); ts.append(time.perf_counter() - t0)
ts = np.array(ts)
for g in (1, 2, 4, 8, 16, 32):
    s = ts[: len(ts) // g * g].reshape(-1, g).mean(1)
    d = np.diff(np.log(s))  # consecutive samples' log ratio: what a paired round sees
    print(f"calls/sample {g:2d}: cv {s.std()/s.mean()*100:5.1f}%  consecutive log-ratio sd {d.std()*100:5.1f}%")
