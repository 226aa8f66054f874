"""Which case had the widest interval to the anchor in each group of a saved grid run (runs saved before the
grid named it in ``group_widest_case``): each case's ``to_anchor`` and the A/A copy's ``aa`` half-widths.

Usage, from the repository root: ``.venv/bin/python evidence/.../widest.py RUN.json ...``
"""

import collections
import json
import sys

for path in sys.argv[1:]:
    groups = collections.defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        p, e = b["params"], b["extra_info"]
        g = groups[(p["kernel"], p["M"], p["layout"])]
        g["inconclusive"] = e["inconclusive"]
        if e.get("to_anchor"):
            g[p["variant"]] = e["to_anchor"]["half_width"]
        if e.get("aa"):
            g["A/A copy"] = e["aa"]["half_width"]
    counts = {True: collections.Counter(), False: collections.Counter()}
    for key, g in groups.items():
        inconclusive = g.pop("inconclusive")
        counts[inconclusive][max(g, key=g.get)] += 1
    print(f"{path}: {len(groups)} groups")
    print("  widest in the inconclusive groups:", ", ".join(f"{n} {c}" for n, c in counts[True].most_common()))
    print("  widest in the converged groups:   ", ", ".join(f"{n} {c}" for n, c in counts[False].most_common()))
