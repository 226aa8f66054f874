import csv, statistics, sys
d = sys.argv[1]
sp = list(csv.DictReader(open(d + '/speedups.csv')))
lat = list(csv.DictReader(open(d + '/latency.csv')))
runs = sorted({r['run'] for r in sp})
def get(run, var, col):
    return {(r['kernel'], int(r['M'])): float(r[col]) for r in sp if r['run'] == run and r['variant'] == var and r[col] not in ('', 'nan')}
for run in runs:
    aa = get(run, 'ml_guided', 'vs_rule_based')
    vals = list(aa.values())
    inc = {(r['kernel'], int(r['M'])): r['inconclusive'] == 'True' for r in lat if r['run'] == run and r['variant'] == 'rule_based'}
    fl = [float(r['noise_floor']) for r in lat if r['run'] == run and r['variant'] == 'rule_based']
    print(run, 'A/A ml_guided/rule_based: geo %.4f range %.3f-%.3f within5%% %d/%d; inconclusive %d/%d; floors median %.3f max %.3f' % (
        statistics.geometric_mean(vals), min(vals), max(vals), sum(abs(v - 1) <= 0.05 for v in vals), len(vals),
        sum(inc.values()), len(inc), statistics.median(fl), max(fl)))
for var in ('rule_based', 'ml_guided', 'metaschedule', 'torch'):
    a, b = get(runs[0], var, 'speedup_vs_numpy_paired'), get(runs[1], var, 'speedup_vs_numpy_paired')
    ks = sorted(set(a) & set(b))
    if not ks: continue
    r = [b[k] / a[k] for k in ks]
    print(var, 'speedup over numpy run1/run2: within5%% %d/%d, range %.3f-%.3f, geo %.3f; geomeans %.3f %.3f' % (
        sum(abs(x - 1) <= 0.05 for x in r), len(r), min(r), max(r), statistics.geometric_mean(r),
        statistics.geometric_mean([a[k] for k in ks]), statistics.geometric_mean([b[k] for k in ks])))
