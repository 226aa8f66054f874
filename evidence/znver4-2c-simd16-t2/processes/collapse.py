import ctypes, os, sys, re
import pandas as pd
from matmul.core.workloads import kernel_shape
from matmul.measure.candidates import prepare
from matmul.measure.interleave import calls_for, time_interleaved
from matmul.measure.stats import best_time
libc=ctypes.CDLL("libc.so.6",use_errno=True)
libc.madvise.argtypes=[ctypes.c_void_p,ctypes.c_size_t,ctypes.c_int]
HUGE=2<<20
def collapse():
    done=0; tried=0
    for line in open("/proc/self/maps"):
        parts=line.split()
        lo,hi=(int(x,16) for x in parts[0].split("-"))
        perms=parts[1]; path=parts[5] if len(parts)>5 else ""
        if perms!="rw-p" or (path and path not in ("[heap]","[stack]")): continue
        a=(lo+HUGE-1)//HUGE*HUGE; b=hi//HUGE*HUGE
        if b<=a: continue
        tried+=1
        libc.madvise(a,b-a,14)  # MADV_HUGEPAGE
        if libc.madvise(a,b-a,25)==0: done+=1
    return done,tried
def smaps_huge():
    return sum(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages"))
mode=sys.argv[1]
shapes=[("mlp_reduce",16),("mlp_reduce",128),("mlp_reduce",192),("mlp_reduce",384),("mlp_expand",128),("mlp_expand",192)]
cs={}
for k,M in shapes:
    sh=kernel_shape(k,M); cs[(k,M)]=[prepare("rule_based",sh),prepare("metaschedule",sh)]
    time_interleaved(cs[(k,M)],blocks=2,calls=2)
if mode=="on": print("collapse",collapse(),"AnonHuge kB",smaps_huge(),file=sys.stderr)
out=[]
for (k,M),c in cs.items():
    calls=max(calls_for(x,5,0.03) for x in c)
    t=time_interleaved(c,blocks=10,calls=calls)
    out.append(round(best_time(t[1])/best_time(t[0]),3))
print(mode, out, flush=True)
