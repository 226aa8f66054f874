"""rule_based over NumPy in the same rounds, per model row and M, from a report: python table.py REPORTDIR."""
import csv
import re
import statistics
import sys

d = sys.argv[1]
sp = [r for r in csv.DictReader(open(d + "/speedups.csv")) if r["variant"] == "rule_based"]
lat = {(r["run"], r["kernel"], r["M"]): r for r in csv.DictReader(open(d + "/latency.csv"))
       if r["variant"] == "rule_based"}
runs = sorted({r["run"] for r in sp})
below = []
print("| model | M = 1 | M = 7 | M = 77 | M = 200 |\n|---|---|---|---|---|")
for run in runs:
    cells = []
    for M in ("1", "7", "77", "200"):
        rows = [r for r in sp if r["run"] == run and r["M"] == M]
        v = [float(r["speedup_vs_numpy_paired"]) for r in rows]
        cells.append(f"{statistics.geometric_mean(v):.2f} ({min(v):.2f})")
        for r, x in zip(rows, v):
            if x < 1.0:
                la = lat[(run, r["kernel"], M)]
                below.append(f"{run} {r['kernel']} M={M}: {x:.3f} (A/A floor {float(la['noise_floor']):.3f}, "
                             f"inconclusive {la['inconclusive']}, {la['limit']} limit {float(la['pct_limit']):.0f}%)")
    model = re.sub(r"^\d+_[^-]+-", "", run)  # 0004_mr9-albert-xxlarge, 0005_z3rows16-llama2-7b: the model
    print(f"| {model} | " + " | ".join(cells) + " |")
at_least = sum(1 for r in sp if float(r["speedup_vs_numpy_paired"]) >= 1.0)
print(f"\n{at_least} of {len(sp)} shapes at or above 1.0x NumPy")
print("\n".join(below))
