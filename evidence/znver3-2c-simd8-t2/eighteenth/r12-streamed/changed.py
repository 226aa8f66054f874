"""Model-row shapes at the given M whose rules config differs between two trees; print old config overrides."""
import sys, subprocess, json
ms = [int(m) for m in sys.argv[1].split(",")]
code = r'''
import json, sys
from matmul import kernel_shape
from matmul.core.workloads import MODELS
from matmul.core.hardware import host_facts
from matmul.schedules.rules.decide import decide
f = host_facts()
res = {}
for M in %r:
    for m in MODELS:
        for k in ("qkv", "mlp_expand", "mlp_reduce"):
            s = kernel_shape(k, M, m)
            c = decide(s, f).config
            res[f"{s.M} {s.K} {s.N}"] = dict(tm=c.tm, tn=c.tn, tk=c.tk, mr=c.mr, jpack=c.jpack, pack_b=c.pack_b, order=c.order, kparts=c.kparts)
print(json.dumps(res))
''' % (ms,)
def run(tree):
    return json.loads(subprocess.run(["/work/main/.venv/bin/python", "-c", code], cwd=tree, capture_output=True, text=True, check=True).stdout)
old, new = run("/tmp/oldtree"), run("/work/main")
for k in old:
    if old[k] != new[k]:
        o = ",".join(f"{a}={b}" for a, b in old[k].items())
        print(k, o)
