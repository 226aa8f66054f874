"""Process to process: does a kernel's speed move with the process when its hot loop reads the stack?

``measure.py procs OUT.csv [--processes P] [--blocks N] [--variants a,b,...]``: P fresh processes (default 8),
each building the variants (default ``metaschedule,rule_based``) and an A/A copy of the last one (a second,
separate build) for the 24 BERT-base shapes and timing them side by side in N interleaved blocks (default 10),
one row per process and shape with each one's best time. A fresh process gets a fresh stack and fresh scratch
memory (TVM's per-thread workspace pools); nothing of the code changes.

``measure.py loops OUT.csv [--variants ...]``: each variant's hot loop per shape (``matmul.core.hotloop``).

``measure.py summary PROCS.csv LOOPS.csv``: per shape and variant, its best time over the last variant's in
the same process (the same rounds, so the machine's state between processes cancels), and the spread of that
ratio over the processes (largest over smallest), beside the hot loop's stack reloads and stores; the A/A
copy's spread is the measurement's own.

Run from the repository root.
"""

import subprocess
import sys

import pandas as pd

from matmul.core.workloads import KERNELS, M_SWEEP, kernel_shape


def _opt(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


VARIANTS = _opt("--variants", "metaschedule,rule_based").split(",")
SHAPES = [(k, M, kernel_shape(k, M)) for k in KERNELS for M in M_SWEEP]


def one_process(out: str, blocks: int) -> None:
    """Child: every shape, the variants interleaved; one row per shape."""
    from matmul.measure.candidates import prepare
    from matmul.measure.interleave import calls_for, time_interleaved
    from matmul.measure.stats import best_time

    rows = []
    for kernel, M, shape in SHAPES:
        cands = [prepare(v, shape) for v in VARIANTS] + [prepare(VARIANTS[-1], shape, fresh=True)]
        calls = max(calls_for(c, 5, 0.03) for c in cands)
        times = time_interleaved(cands, blocks=blocks, calls=calls)
        rows.append(dict(kernel=kernel, M=M, **{f"{v}_best_us": best_time(t) * 1e6
                                                for v, t in zip([*VARIANTS, "aa"], times)}))
    pd.DataFrame(rows).to_csv(out, index=False)


def procs(out: str) -> None:
    frames = []
    for p in range(int(_opt("--processes", "8"))):
        part = f"{out}.part{p}"
        subprocess.run([sys.executable, __file__, "child", part, "--blocks", _opt("--blocks", "10"),
                        "--variants", ",".join(VARIANTS)], check=True)
        frames.append(pd.read_csv(part).assign(process=p))
        print(f"process {p} done", flush=True)
    pd.concat(frames).to_csv(out, index=False)


def loops(out: str) -> None:
    from matmul.core.runner import build

    rows = []
    for kernel, M, shape in SHAPES:
        for v in VARIANTS:
            rows.append(dict(kernel=kernel, M=M, variant=v, **build(v, shape).hot_loop().as_dict()))
    pd.DataFrame(rows).to_csv(out, index=False)


def summary(procs_csv: str, loops_csv: str) -> pd.DataFrame:
    p = pd.read_csv(procs_csv)
    lp = pd.read_csv(loops_csv)
    anchor = p[f"{VARIANTS[-1]}_best_us"]
    rows = []
    for v in [*VARIANTS[:-1], "aa"]:
        p["ratio"] = p[f"{v}_best_us"] / anchor
        for (kernel, M), g in p.groupby(["kernel", "M"], sort=False):
            loop = lp[(lp.kernel == kernel) & (lp.M == M) & (lp.variant == (VARIANTS[-1] if v == "aa" else v))]
            loop = loop.iloc[0]
            rows.append(dict(kernel=kernel, M=M, variant=v, ratio_median=round(g.ratio.median(), 3),
                             ratio_min=round(g.ratio.min(), 3), ratio_max=round(g.ratio.max(), 3),
                             spread=round(g.ratio.max() / g.ratio.min(), 3), stack_loads=loop.stack_loads,
                             stores=loop.stores, loads_per_fma=loop.loads_per_fma))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    cmd, out = sys.argv[1], sys.argv[2]
    if cmd == "child":
        one_process(out, int(_opt("--blocks", "10")))
    elif cmd == "procs":
        procs(out)
    elif cmd == "loops":
        loops(out)
    elif cmd == "summary":
        s = summary(out, sys.argv[3])
        print(s.to_string(index=False))
        for v, g in s.groupby("variant", sort=False):
            kinds = {"reads the stack": g.stack_loads > 0, "stores, no stack": (g.stack_loads == 0) & (g.stores > 0),
                     "neither": (g.stack_loads == 0) & (g.stores == 0)}
            for what, sel in kinds.items():
                if sel.any():
                    print(f"{v} / {VARIANTS[-1]}, hot loop {what}: {sel.sum()} shapes, spread over processes "
                          f"median {g.spread[sel].median():.3f}, largest {g.spread[sel].max():.3f}")
