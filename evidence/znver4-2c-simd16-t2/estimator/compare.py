"""Run to run by the median and by the best time, on pairs of saved grid runs of the same code.

    python evidence/znver4-2c-simd16-t2/estimator/compare.py RUN_A.json RUN_B.json [RUN_C.json RUN_D.json ...]

For each pair (A, B): how many cases' latency ratio B/A lies within 5% of 1, read by each estimator
(``report``'s comparison, raw seconds), how many the report flags, and per variant how many shapes'
speedup over NumPy (timed in the same rounds) agrees within 5% between the runs: the paired median
(``speedup_vs_numpy``) and the ratio of best times (``speedup_vs_numpy_best``), as the report's
``speedup_agreement`` table counts them. Prints one CSV row per pair, estimator and variant.
"""

import sys

from matmul.report import build_report

VARIANTS = ("rule_based", "ml_guided", "metaschedule", "torch")


def main(paths: list[str]) -> None:
    if len(paths) % 2:
        sys.exit("give the runs in pairs")
    print("run_a,run_b,what,estimator,within_5pct,of,flagged")
    for a, b in zip(paths[::2], paths[1::2]):
        for est in ("median", "best"):
            rep = build_report([a, b], estimator=est)
            comp = rep.comparison
            ok = int(((comp["ratio"] - 1).abs() <= 0.05).sum())
            names = list(rep.runs["run"])
            print(f"{names[0]},{names[1]},latency,{est},{ok},{len(comp)},{len(rep.regressions)}")
            agree = rep.speedup_agreement.set_index("variant")  # the report's own table (within 5%)
            for v in VARIANTS:
                if v in agree.index:
                    print(f"{names[0]},{names[1]},speedup_vs_numpy:{v},{est},"
                          f"{agree.loc[v, 'within_band_' + est]},{agree.loc[v, 'shapes']},")


if __name__ == "__main__":
    main(sys.argv[1:])
