"""Percent of the measured FP32 peak per shape and run, from a report's latency.csv: python peak.py REPORTDIR."""
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1] + "/latency.csv")))
runs = sorted({r["run"] for r in rows})
for var in ("rule_based", "ml_guided", "numpy"):
    for run in runs:
        pct = {(r["kernel"], int(r["M"])): float(r["pct_peak"]) for r in rows
               if r["run"] == run and r["variant"] == var}
        line = " ".join(f"{k[0]}{k[1]}:{v:.0f}" for k, v in sorted(pct.items()))
        low16 = {k: v for k, v in pct.items() if k[1] == 16}
        big = [v for k, v in pct.items() if k[1] >= 96]
        print(f"{run} {var}: geomean {statistics.geometric_mean(pct.values()):.1f}% of peak; M=16 "
              + ", ".join(f"{k[0]} {v:.0f}%" for k, v in sorted(low16.items()))
              + f"; M>=96 at >= 85%: {sum(v >= 85 for v in big)}/{len(big)}")
        print("   " + line)
