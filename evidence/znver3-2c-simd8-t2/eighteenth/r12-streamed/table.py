import csv, glob, sys, math
d = sys.argv[1]
rows = {}
for kind in ("ab", "aa", "np"):
    for f in sorted(glob.glob(f"{d}/{kind}-*.csv")):
        if f.endswith("-geomean.csv"):
            continue
        for r in csv.DictReader(open(f)):
            key = f"{r['M']}x{r['K']}x{r['N']}"
            rows.setdefault(key, {})[kind] = r
print("| shape (M x K x N) | new rules over old (95% CI) | old ms | new ms | A/A (new twice, 95% CI) | new rules over NumPy (95% CI) |")
print("| --- | --- | --- | --- | --- | --- |")
g = {"ab": [], "aa": [], "np": []}
for key, r in rows.items():
    cells = []
    for kind in ("ab", "aa", "np"):
        x = r.get(kind)
        if x is None:
            cells.append("")
            continue
        g[kind].append(math.log(float(x["speedup_b_over_a"])))
        cells.append(f"{float(x['speedup_b_over_a']):.2f}x ({float(x['ci_lo']):.2f}-{float(x['ci_hi']):.2f})")
    ab = r.get("ab")
    print(f"| {key.replace('x', ' x ')} | {cells[0]} | {float(ab['a_ms']):.2f} | {float(ab['b_ms']):.2f} | {cells[1]} | {cells[2]} |" if ab else f"| {key} | | | | {cells[1]} | {cells[2]} |")
print("geomeans:", {k: round(math.exp(sum(v) / len(v)), 3) for k, v in g.items() if v})
