import threading, sys
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import calls_for, time_interleaved
from matmul.measure.stats import best_time
shapes=[("mlp_reduce",16),("mlp_reduce",128),("mlp_reduce",192),("mlp_reduce",384),("mlp_expand",128),("mlp_expand",192)]
cs={}
for k,M in shapes:
    sh=kernel_shape(k,M); cs[(k,M)]=[prepare("rule_based",sh),prepare("metaschedule",sh)]
def measure(tag):
    out=[]
    for (k,M),c in cs.items():
        calls=max(calls_for(x,5,0.03) for x in c)
        t=time_interleaved(c,blocks=10,calls=calls)
        out.append(round(best_time(t[1])/best_time(t[0]),3))
    print(tag,out,flush=True)
measure("main")
for i in range(3):
    th=threading.Thread(target=measure,args=(f"thread{i}",)); th.start(); th.join()
measure("main again")
