"""Run to run, per variant: how many of the 24 BERT shapes' best times (``best_s``, the kernel's own) and
speedups over NumPy by best times (``speedup_vs_numpy_best``) agree within 5% between two saved runs.

    python evidence/znver4-2c-simd16-t2/processes/pairs.py RUN_A.json RUN_B.json [RUN_C.json RUN_D.json ...]

One CSV row per pair and variant; ``spread_median`` / ``spread_max``: the runs' ``process_spread``
(timed with --processes) over the shapes, blank for runs of one process.
"""

import json
import statistics
import sys

VARIANTS = ("rule_based", "ml_guided", "metaschedule", "torch", "numpy")


def load(path: str) -> dict:
    return {(b["params"]["kernel"], b["params"]["M"], b["params"]["variant"]): b["extra_info"]
            for b in json.load(open(path))["benchmarks"]}


def main(paths: list[str]) -> None:
    print("run_a,run_b,variant,best_within_5pct,speedup_best_within_5pct,of,spread_median,spread_max")
    for pa, pb in zip(paths[::2], paths[1::2]):
        a, b = load(pa), load(pb)
        for v in VARIANTS:
            keys = sorted(k for k in a if k[2] == v and k in b)
            best = sum(abs(b[k]["best_s"] / a[k]["best_s"] - 1) <= 0.05 for k in keys)
            sp = [k for k in keys if a[k].get("speedup_vs_numpy_best") and b[k].get("speedup_vs_numpy_best")]
            speed = sum(abs(b[k]["speedup_vs_numpy_best"] / a[k]["speedup_vs_numpy_best"] - 1) <= 0.05 for k in sp)
            spreads = [x[k]["process_spread"] for x in (a, b) for k in keys if x[k].get("process_spread")]
            med = f"{statistics.median(spreads):.3f}" if spreads else ""
            top = f"{max(spreads):.3f}" if spreads else ""
            name = lambda p: p.rsplit("/", 1)[-1].removesuffix(".json")  # noqa: E731
            print(f"{name(pa)},{name(pb)},{v},{best},{speed if sp else ''},{len(keys)},{med},{top}")


if __name__ == "__main__":
    main(sys.argv[1:])
