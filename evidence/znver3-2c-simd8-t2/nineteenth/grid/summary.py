"""Issue 14's A/A figures and issue 16's percent of peak for saved default grids (one line block per run).

Usage, from the repository root: ``.venv/bin/python evidence/.../summary.py RUN.json ...``
"""

import json
import math
import statistics
import sys

for path in sys.argv[1:]:
    cases = json.load(open(path))["benchmarks"]
    groups = {}
    for b in cases:
        p, e = b["params"], b["extra_info"]
        groups.setdefault((p["kernel"], p["M"]), e)
    aa = [e["aa"]["ratio"] for e in groups.values()]
    inc = sum(e["inconclusive"] for e in groups.values())
    rb = {(b["params"]["kernel"], b["params"]["M"]): b["extra_info"] for b in cases
          if b["params"]["variant"] == "rule_based"}
    pct = {k: e["pct_peak"] for k, e in rb.items()}
    print(path)
    print(f"  A/A within 5%: {sum(abs(r - 1) <= 0.05 for r in aa)}/24, geomean {statistics.geometric_mean(aa):.3f}, "
          f"range {min(aa):.3f}-{max(aa):.3f}; floors median {100 * statistics.median(e['noise_floor'] for e in groups.values()):.1f}%, "
          f"largest {100 * max(e['noise_floor'] for e in groups.values()):.1f}%; inconclusive {inc}/24")
    print(f"  rule_based % of peak in its rounds: geomean {statistics.geometric_mean(pct.values()):.1f}; "
          f"M>=96 at >= 85%: {sum(v >= 85 for (k, m), v in pct.items() if m >= 96)}/15 "
          f"(range {min(v for (k, m), v in pct.items() if m >= 96):.0f}-{max(v for (k, m), v in pct.items() if m >= 96):.0f}); "
          "M=16: " + ", ".join(f"{k} {v:.0f}" for (k, m), v in sorted(pct.items()) if m == 16))
    sp = [e["speedup_vs_numpy"] for e in rb.values()]
    print(f"  rule_based over NumPy (paired medians): geomean {statistics.geometric_mean(sp):.3f}, "
          f"range {min(sp):.2f}-{max(sp):.2f}; peak probe in rounds "
          f"{min(e['peak_gflops_in_rounds'] for e in rb.values()):.0f}-{max(e['peak_gflops_in_rounds'] for e in rb.values()):.0f} GFLOP/s")
