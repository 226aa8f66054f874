"""``report``: tables, comparisons and plots from saved benchmark runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..measure.stats import ESTIMATORS
from ..report import (
    CV_THRESHOLD,
    REGRESSION_THRESHOLD,
    STORAGE,
    build_report,
    plot_report,
    to_text,
    write_report,
)
from ..report.compare import NORMALIZE
from .common import check_out, say


def _cmd_report(args: argparse.Namespace) -> int:
    check_out(args.out, "--out", folder=True)
    report = build_report(args.runs, storage=args.storage, base=args.base, threshold=args.threshold,
                          cv_threshold=args.cv_threshold, normalize=args.normalize,
                          estimator=args.estimator)
    print(to_text(report))
    if args.out:
        files = write_report(report, args.out)
        if args.plots:
            try:
                files += plot_report(report, args.out)
            except ImportError as err:
                say(f"error: {err}")
                return 2
        print(f"\nwrote {len(files)} files to {args.out}/")
    elif args.plots:
        say("error: --plots needs --out DIR")
        return 2
    return 1 if len(report.regressions) else 0


def add_parsers(sub) -> None:
    """Add this group's commands to the top-level sub-parsers."""
    rep = sub.add_parser("report", help="tables, comparisons and plots from saved benchmark runs",
                         description="Exit status: 0 ok, 1 a regression (significant and beyond the runs' A/A noise "
                                     "floor and what NumPy and PyTorch moved between runs of one CPU profile; "
                                     "runs without samples: beyond --threshold, default 10%), 2 bad input.")
    rep.add_argument("runs", nargs="*", help="run files, folders or globs (default: every run under --storage)")
    rep.add_argument("--storage", type=Path, default=STORAGE, help="pytest-benchmark storage (default: %(default)s)")
    rep.add_argument("--base", help="run label to compare the others against (default: the oldest)")
    rep.add_argument("--threshold", type=float, default=None,
                     help="also require a regression to exceed this ratio above 1 (runs without samples: the "
                          f"whole rule, default {REGRESSION_THRESHOLD})")
    rep.add_argument("--normalize", choices=NORMALIZE, default="none",
                     help="numpy: compare each case relative to numpy timed in its own rounds, which removes "
                          "drift both runs share; peak: relative to the FP32 peak probe timed in its own rounds, "
                          "which removes a clock that moved between runs (default: %(default)s)")
    rep.add_argument("--estimator", choices=ESTIMATORS, default="best",
                     help="what each case's time is read by when two or more runs are compared (the comparison "
                          "table; the speedups table gives both): best, the mean of its fastest 3 samples (5%% of "
                          "them from 61 on), which holds from run to run on a shared host; median, its typical "
                          "time under the machine's load; with --normalize, best takes each run's ratio of best "
                          "times to the reference, median the median of the per-round ratios (default: %(default)s)")
    rep.add_argument("--cv-threshold", type=float, default=CV_THRESHOLD,
                     help="flag cases whose CV exceeds this (default: %(default)s)")
    rep.add_argument("--out", type=Path, help="write CSV and Markdown (and PNG with --plots) here")
    rep.add_argument("--plots", action="store_true", help="draw PNG plots (needs the 'plot' extra)")
    rep.set_defaults(func=_cmd_report)
