"""R14, B's next block prefetched in software: each shape of ``workloads.MODELS`` (the BERT-base grid's M and 77;
models that share a shape are measured once) where the rules' plan prefetches, against the same plan with the
prefetch pinned off, an A/A copy of the new build and NumPy, interleaved blocks, NN (``prefetch.csv``).

``--domain``: every shape where the schedule *can* prefetch (B read in place, rows a page or more apart, enough
row tiles; the machine's sizes not asked), the prefetch pinned on against pinned off (``domain.csv``): the
measurements behind R14's bounds on B's size (a share of L3) and the block's (L1).

``--gap``: the same on shapes of no model, B of 6.5-9 MiB (between the domain run's 6.2 and 9 MiB, around the
bound on B: a quarter of a 32 MiB L3 when measured, a fifth since) at M = 64 and 128 (``gap.csv``).

Run from the repository root: ``python evidence/<profile>/prefetch/measure.py OUT.csv [--domain|--gap]
[--blocks N]``.
"""

import sys

from matmul.core.hardware import host_facts
from matmul.core.workloads import KERNELS, M_SWEEP, MODELS, MatmulShape, kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.paired import before_after, write_rows
from matmul.schedules.rules import decide, prefetch_blocker
from matmul.schedules.rules.config import l1_bytes
from matmul.schedules.template import config_name

facts = host_facts()
gap = "--gap" in sys.argv
domain = "--domain" in sys.argv or gap
blocks = int(sys.argv[sys.argv.index("--blocks") + 1]) if "--blocks" in sys.argv else 10
GAP_KN = [(1664, 1024), (1024, 1792), (1792, 1024), (1536, 1280), (1024, 2048), (2048, 1024), (1152, 2048),
          (2304, 1024)]  # B of 6.5, 7, 7, 7.5, 8, 8, 9, 9 MiB; rows 4-8 KiB apart


def shapes():
    if gap:
        yield from (("gap/synthetic", MatmulShape(M, K, N)) for K, N in GAP_KN for M in (64, 128))
        return
    for name in MODELS:
        for kernel in KERNELS:
            for M in sorted({*M_SWEEP, 77}):
                yield f"{name}/{kernel}", kernel_shape(kernel, M, name)


seen, rows = set(), []
for workload, shape in shapes():
    M = shape.M
    plan = decide(shape, facts)
    c = plan.config
    wanted = not prefetch_blocker(c, shape) if domain else plan.prefetch
    if not wanted or (M, shape.K, shape.N) in seen:
        continue
    seen.add((M, shape.K, shape.N))
    base = config_name(c)[:-1]
    old, new = base + ",prefetch=off]", base + ",prefetch=on]"
    old_c, new_c, twin = (prepare(n, shape, fresh=True) for n in (old, new, new))
    row = dict(workload=workload, M=M, K=shape.K, N=shape.N, tm=c.tm, mr=c.mr, tk=c.tk, tn=c.tn,
               jpack=c.jpack, row_tiles=c.tm // c.mr, b_mib=round(shape.K * shape.N * 4 / 2**20, 1),
               block_kib=c.tk * c.jpack * 4 // 1024, l1_kib=l1_bytes(facts) // 1024,
               rules_prefetch=plan.prefetch,
               **before_after(old_c, new_c, twin, blocks=blocks, reference=prepare("numpy", shape)))
    print(row, flush=True)
    rows.append(row)
write_rows(sys.argv[1], rows)
