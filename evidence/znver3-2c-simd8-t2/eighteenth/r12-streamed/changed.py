"""Model rows whose rules config differs between two checkouts, on this host's facts; prints each with the old
config as rule_based[...] pins (what meas.sh reads as old-configs.txt).

    git worktree add /tmp/old <commit before the rule>
    .venv/bin/python evidence/znver3-2c-simd8-t2/eighteenth/r12-streamed/changed.py /tmp/old . 7,8
"""
import json
import subprocess
import sys

old_tree, new_tree, m_values = sys.argv[1], sys.argv[2], [int(m) for m in sys.argv[3].split(",")]
code = r'''
import json
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
            res[f"{s.M} {s.K} {s.N}"] = dict(tm=c.tm, tn=c.tn, tk=c.tk, mr=c.mr, jpack=c.jpack, pack_b=c.pack_b,
                                             order=c.order, kparts=c.kparts)
print(json.dumps(res))
''' % (m_values,)


def configs(tree):
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


old, new = configs(old_tree), configs(new_tree)
for key in old:
    if old[key] != new[key]:
        print(key, ",".join(f"{a}={b}" for a, b in old[key].items()))
