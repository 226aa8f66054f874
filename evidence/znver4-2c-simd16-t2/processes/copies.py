import sys, pandas as pd
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import calls_for, time_interleaved
from matmul.measure.stats import best_time
rows=[]
for k,M in [("mlp_reduce",16),("mlp_reduce",128),("mlp_reduce",192),("mlp_reduce",384),("mlp_expand",128),("mlp_expand",192)]:
    sh=kernel_shape(k,M)
    cands=[prepare("rule_based",sh)]+[prepare("metaschedule",sh,fresh=True) for _ in range(4)]
    calls=max(calls_for(c,5,0.03) for c in cands)
    t=time_interleaved(cands,blocks=10,calls=calls)
    b=[best_time(x) for x in t]
    rows.append(dict(kernel=k,M=M,**{f"ms{i}":round(b[i+1]/b[0],3) for i in range(4)}))
    print(rows[-1],flush=True)
