"""Read saved pytest-benchmark runs of ``bench/`` and turn them into tables and plots.

A run is one JSON file written by ``pytest bench/ --benchmark-save=NAME`` (or
``--benchmark-json=PATH``). Every figure in the tables comes from a run's own
saved statistics; nothing is re-measured here.

Tables (pandas DataFrames, also written as CSV and Markdown):

``latency``
    kernel x M x variant x layout per run: median, IQR and CV of the
    latency, GFLOP/s and percent of the FP32 peak (the peak probe timed in the
    case's own rounds where the run has one, else the run's measured peak); a case
    whose CV exceeds the threshold is flagged ``noisy``, one whose group
    never got its intervals tight is flagged ``inconclusive``, and the
    group's A/A ``noise_floor`` is given.
``speedups``
    each case's speedup over baseline, full, the best manual (seed) variant,
    numpy and metaschedule for the same shape in the same run (time of the
    reference / time of the case; empty where the reference was not run),
    with the case's CV; ``speedup_vs_numpy_best`` is the speedup over numpy
    of best times (:func:`~matmul.measure.stats.best_time`), the figure that
    holds from run to run on a shared host (see :mod:`matmul.measure.stats`).
``geomeans``
    geometric means of GFLOP/s and of every speedup, per kernel and over all
    kernels ("all"), per run and variant, with the largest CV among the
    shapes: the statistics the seed reports.
``agreement``
    each case's median over the independent timer that bracketed it
    (TVM's ``time_evaluator``; NumPy alone in a fresh process).
``speedup_agreement``
    with two or more runs: per run and variant, on how many shapes the
    speedup over numpy agrees with the base run's within
    :data:`AGREEMENT_BAND` (5%), by best times and by paired medians, and
    the range of the ratio: how far the run-to-run figure can be trusted.
``comparison``
    with two or more runs: for every case present in the base run and
    another, the latency ratio other / base with its interval and
    significance (see :mod:`matmul.report.compare`): a regression is
    significant and beyond the runs' A/A noise floor and the references'
    drift between them. Geometric means per
    kernel and overall come with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.registry import variant_names
from ..core.tables import geomean, geomeans_by_kernel
from ..measure.agreement import AGREEMENT_TOLERANCE
from .compare import FALLBACK_THRESHOLD, check_estimator, compare_runs
from .e2e import e2e_table
from .load import KEY, STORAGE, ReportError, find_runs, load_runs

#: Runs without raw samples: a latency ratio (other / base) above 1 + this is a regression.
REGRESSION_THRESHOLD = FALLBACK_THRESHOLD
#: Coefficient of variation above this flags a case as noisy.
CV_THRESHOLD = 0.10
#: Two runs' speedups over numpy agree when their ratio lies within 1 +- this.
AGREEMENT_BAND = 0.05
#: Variants the seed research wrote by hand; "best manual" is the fastest.
MANUAL_FAMILY = "manual"


@dataclass
class Report:
    """All tables for a set of runs; ``regressions`` is empty when none."""

    runs: pd.DataFrame
    latency: pd.DataFrame
    speedups: pd.DataFrame
    geomeans: pd.DataFrame
    agreement: pd.DataFrame
    comparison: pd.DataFrame | None = None
    comparison_geomeans: pd.DataFrame | None = None
    speedup_agreement: pd.DataFrame | None = None
    settings: dict = field(default_factory=dict)
    #: End-to-end layer cases (empty when the runs hold none).
    e2e: pd.DataFrame | None = None

    @property
    def regressions(self) -> pd.DataFrame:
        if self.comparison is None:
            return pd.DataFrame()
        return self.comparison[self.comparison["regression"]]

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {
            "runs": self.runs,
            "latency": self.latency,
            "speedups": self.speedups,
            "geomeans": self.geomeans,
            "agreement": self.agreement,
        }
        if self.e2e is not None and not self.e2e.empty:
            out["e2e"] = self.e2e
        if self.speedup_agreement is not None:
            out["speedup_agreement"] = self.speedup_agreement
        if self.comparison is not None:
            out["comparison"] = self.comparison
            out["comparison_geomeans"] = self.comparison_geomeans
        return out


def _manual_variants(cases: pd.DataFrame) -> set[str]:
    """The cases' variants of the manual family: as the run saved it, else (older runs) as registered."""
    saved = cases["family"] if "family" in cases else pd.Series(None, index=cases.index, dtype=object)
    registered = set(variant_names(family=MANUAL_FAMILY))
    return {v for v, fam in zip(cases["variant"], saved) if fam == MANUAL_FAMILY or (fam is None and v in registered)}


def latency_table(cases: pd.DataFrame, cv_threshold: float = CV_THRESHOLD) -> pd.DataFrame:
    out = cases[["run", *KEY, "median_s", "iqr_s", "cv", "rounds", "gflops", "pct_peak", "limit", "pct_limit",
                 "bandwidth_gbs", "inconclusive", "widest_case", "noise_floor", "process_spread", "loads_per_fma",
                 "stack_loads"]].copy()
    out["median_ms"] = out.pop("median_s") * 1e3
    out["iqr_ms"] = out.pop("iqr_s") * 1e3
    out["noisy"] = out["cv"] > cv_threshold
    return out[["run", *KEY, "median_ms", "iqr_ms", "cv", "noisy", "inconclusive", "widest_case", "noise_floor",
                "process_spread", "rounds", "gflops", "pct_peak", "limit", "pct_limit", "bandwidth_gbs",
                "loads_per_fma", "stack_loads"]].sort_values(
        ["run", "kernel", "layout", "M", "variant"], ignore_index=True
    )


def speedup_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Speedup of every case over each reference run on the same shape."""
    shape = ["run", "kernel", "M", "layout"]
    out = cases[[*shape, "variant", "median_s", "cv", "gflops", "speedup_vs_numpy_paired"]].copy()
    times = cases.set_index([*shape, "variant"])["median_s"]
    idx = pd.MultiIndex.from_frame(out[shape])
    numpy_best = cases[cases["variant"] == "numpy"].set_index(shape)["best_s"].reindex(idx).to_numpy(dtype=float)
    out["speedup_vs_numpy_best"] = numpy_best / cases["best_s"].to_numpy(dtype=float)

    def ref_time(name: str) -> pd.Series:
        sel = times.xs(name, level="variant") if name in times.index.get_level_values("variant") else None
        return sel if sel is not None else pd.Series(dtype=float)

    manual = _manual_variants(cases)
    best = (
        cases[cases["variant"].isin(manual)].groupby(shape)["median_s"].min()
        if cases["variant"].isin(manual).any()
        else pd.Series(dtype=float)
    )
    for ref, series in (
        ("baseline", ref_time("baseline")),
        ("full", ref_time("full")),
        ("best_manual", best),
        ("numpy", ref_time("numpy")),
        ("metaschedule", ref_time("metaschedule")),
        ("rule_based", ref_time("rule_based")),
    ):
        ref_s = series.reindex(idx).to_numpy(dtype=float) if len(series) else np.full(len(out), np.nan)
        out[f"vs_{ref}"] = ref_s / out["median_s"].to_numpy()
    return out.drop(columns="median_s").sort_values(["run", "kernel", "layout", "M", "variant"], ignore_index=True)


def geomean_table(speedups: pd.DataFrame) -> pd.DataFrame:
    cols = ["gflops"] + [c for c in speedups.columns if c.startswith("vs_")] + ["speedup_vs_numpy_paired",
                                                                                  "speedup_vs_numpy_best"]
    parts = []
    for (run, variant, layout), grp in speedups.groupby(["run", "variant", "layout"], sort=True):
        geo = geomeans_by_kernel(grp, cols, sort=True, extra=lambda g: {"max_cv": float(g["cv"].max())})
        parts.append(geo.assign(run=run, variant=variant, layout=layout))
    out = pd.concat(parts, ignore_index=True)[["run", "kernel", "variant", "layout", "shapes", "max_cv", *cols]]
    return out.rename(columns={"gflops": "gflops_geomean"})


def speedup_agreement_table(speedups: pd.DataFrame, base: str) -> pd.DataFrame:
    """Per run (other than ``base``) and variant: how many shapes' speedups over numpy agree with the base run's
    within :data:`AGREEMENT_BAND`, by best times and by paired medians, with the geomean and range of the ratio of
    best-time speedups (run / base)."""
    cols = ["base", "run", "variant", "shapes", "within_band_best", "within_band_median", "ratio_geomean_best",
            "ratio_min_best", "ratio_max_best"]
    key = ["kernel", "M", "layout", "variant"]
    speeds = speedups[speedups["variant"] != "numpy"]
    ref = speeds[speeds["run"] == base].set_index(key)
    rows = []
    for run, grp in speeds[speeds["run"] != base].groupby("run", sort=False):
        both = grp.set_index(key).merge(ref, left_index=True, right_index=True, how="inner", suffixes=("", "_base"))
        for variant, v in both.groupby(level="variant", sort=True):
            best = (v["speedup_vs_numpy_best"] / v["speedup_vs_numpy_best_base"]).astype(float).dropna()
            median = (v["speedup_vs_numpy_paired"] / v["speedup_vs_numpy_paired_base"]).astype(float).dropna()
            if best.empty and median.empty:
                continue
            rows.append({"base": base, "run": run, "variant": variant, "shapes": len(v),
                         "within_band_best": int(((best - 1).abs() <= AGREEMENT_BAND).sum()) if len(best) else None,
                         "within_band_median": int(((median - 1).abs() <= AGREEMENT_BAND).sum()),
                         "ratio_geomean_best": geomean(best) if len(best) else None,
                         "ratio_min_best": best.min() if len(best) else None,
                         "ratio_max_best": best.max() if len(best) else None})
    return pd.DataFrame(rows, columns=cols)


def agreement_table(cases: pd.DataFrame) -> pd.DataFrame:
    sub = cases[cases["agreement"].notna()].copy()
    cols = ["run", *KEY, "agreement_check", "median_s", "agreement_median_s", "agreement"]
    if sub.empty:
        return pd.DataFrame(columns=[*cols, "tolerance", "agrees"])
    sub = sub[cols]
    sub["tolerance"] = sub["agreement_check"].map(AGREEMENT_TOLERANCE).astype(float)
    sub["agrees"] = (sub["agreement"].astype(float) - 1).abs() <= sub["tolerance"]
    return sub.sort_values(["run", "agreement_check", "kernel", "M", "variant"], ignore_index=True)


def agreement_summary(agreement: pd.DataFrame) -> pd.DataFrame:
    """Per run and check: cases, geometric-mean and median ratio, and how many agree."""
    if agreement.empty:
        return pd.DataFrame(columns=["run", "agreement_check", "cases", "geomean", "median", "agreeing"])
    return (
        agreement.groupby(["run", "agreement_check"])
        .agg(
            cases=("agreement", "size"),
            geomean=("agreement", geomean),
            median=("agreement", "median"),
            agreeing=("agrees", "sum"),
        )
        .reset_index()
    )


def _kernel_tables(cases: pd.DataFrame, cv_threshold: float) -> dict[str, pd.DataFrame]:
    """The kernel tables of a report; empty ones when the runs hold end-to-end layer cases only."""
    if cases.empty:
        return {"latency": pd.DataFrame(columns=["run", *KEY, "noisy", "inconclusive", "widest_case", "noise_floor"]),
                "speedups": pd.DataFrame(), "geomeans": pd.DataFrame(),
                "agreement": agreement_table(pd.DataFrame(columns=["agreement"]))}
    speedups = speedup_table(cases)
    return {"latency": latency_table(cases, cv_threshold), "speedups": speedups,
            "geomeans": geomean_table(speedups), "agreement": agreement_table(cases)}


def build_report(
    paths: Sequence[str | Path] = (),
    *,
    storage: Path = STORAGE,
    base: str | None = None,
    threshold: float | None = None,
    cv_threshold: float = CV_THRESHOLD,
    normalize: str = "none",
    estimator: str = "best",
) -> Report:
    """Tables for the runs under ``paths``; with two or more runs (or a ``base``), the comparison too.

    ``threshold``: a minimum regression on top of the noise floor (runs
    without samples: the whole rule; default 10% there). ``estimator``: what
    the comparison reads each case's time by, "best" or "median"
    (:mod:`matmul.report.compare`).
    """
    def bad(x) -> bool:  # not a finite positive number (nan fails every comparison, so ask for it by name)
        try:
            return isinstance(x, bool) or not math.isfinite(x) or x <= 0
        except TypeError:
            return True

    check_estimator(estimator)  # before loading: a bad one is named even with a single run
    if (threshold is not None and bad(threshold)) or bad(cv_threshold):
        raise ReportError(f"thresholds must be finite positive numbers, got threshold={threshold}, "
                          f"cv_threshold={cv_threshold}")
    skipped: list[tuple[str, str]] = []
    runs, cases = load_runs(find_runs(paths, storage), skipped)
    runs = runs.sort_values("datetime", ignore_index=True, kind="stable")
    report = Report(runs=runs, **_kernel_tables(cases, cv_threshold),
                    settings={"threshold": threshold, "cv_threshold": cv_threshold, "skipped": skipped})
    report.e2e = e2e_table(zip(runs["run"], runs["file"]))
    with_cases = set(cases["run"]) if not cases.empty else set()
    kernel_runs = [r for r in runs["run"] if r in with_cases]  # end-to-end-only runs compare nothing here
    if len(kernel_runs) > 1 or base is not None:
        if base is not None and base in set(runs["run"]) and base not in kernel_runs:
            raise ReportError(f"base run {base!r} holds only end-to-end cases; choose a run with kernel cases: "
                              + ", ".join(kernel_runs))
        base = base or kernel_runs[0]
        report.comparison, report.comparison_geomeans = compare_runs(cases, base, threshold, cv_threshold,
                                                                     normalize, estimator)
        report.speedup_agreement = speedup_agreement_table(report.speedups, base)
        report.settings.update(base=base, normalize=normalize, estimator=estimator)
    return report


__all__ = [
    "AGREEMENT_BAND", "CV_THRESHOLD", "REGRESSION_THRESHOLD", "Report", "agreement_summary", "agreement_table",
    "build_report", "compare_runs", "geomean_table", "latency_table", "speedup_agreement_table", "speedup_table",
]
