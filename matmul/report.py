"""Read saved pytest-benchmark runs of ``bench/`` and turn them into tables and plots.

A run is one JSON file written by ``pytest bench/ --benchmark-save=NAME`` (or
``--benchmark-json=PATH``). Every figure in the tables comes from a run's own
saved statistics; nothing is re-measured here.

Tables (pandas DataFrames, also written as CSV and Markdown):

``latency``
    kernel x M x variant x layout per run: median, IQR and CV of the
    latency, GFLOP/s and percent of the run's measured FP32 peak; a case
    whose CV exceeds the threshold is flagged ``noisy``.
``speedups``
    each case's speedup over baseline, full, the best manual (seed) variant,
    numpy and metaschedule for the same shape in the same run (time of the
    reference / time of the case; empty where the reference was not run),
    with the case's CV.
``geomeans``
    geometric means of GFLOP/s and of every speedup, per kernel and over all
    kernels ("all"), per run and variant, with the largest CV among the
    shapes: the statistics the seed reports.
``agreement``
    each case's median over the independent timer that bracketed it
    (TVM's ``time_evaluator``; NumPy alone in a fresh process).
``comparison``
    with two or more runs: for every case present in the base run and
    another, the latency ratio other / base. A regression is a ratio above
    ``1 + threshold`` whose interquartile range lies wholly above the base's
    (slower beyond the threshold and beyond the noise). Geometric means per
    kernel and overall come with it.
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Default storage of pytest-benchmark.
STORAGE = Path(".benchmarks")
#: Latency ratio (other / base) above 1 + this is a regression.
REGRESSION_THRESHOLD = 0.10
#: Coefficient of variation above this flags a case as noisy.
CV_THRESHOLD = 0.10
#: Agreement tolerances: |ratio - 1| within these is agreement.
AGREEMENT_TOLERANCE = {"time_evaluator": 0.05, "numpy_alone": 0.10}
#: Variants the seed research wrote by hand; "best manual" is the fastest.
MANUAL_FAMILY = "manual"
KEY = ["kernel", "M", "variant", "layout"]


class ReportError(ValueError):
    """A run file is missing, unreadable, or not from this suite."""


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
    settings: dict = field(default_factory=dict)

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
        if self.comparison is not None:
            out["comparison"] = self.comparison
            out["comparison_geomeans"] = self.comparison_geomeans
        return out


# --------------------------------------------------------------------------- loading
def find_runs(paths: Sequence[str | Path] = (), storage: Path = STORAGE) -> list[Path]:
    """Expand files, folders and globs into run files (default: all of ``storage``)."""
    if not paths:
        found = sorted(storage.glob("*/*.json"))
        if not found:
            raise ReportError(f"no saved runs under {storage}/; run: pytest bench/ --benchmark-save=NAME")
        return found
    out: list[Path] = []
    for p in map(str, paths):
        path = Path(p)
        if path.is_dir():
            hits = sorted(path.rglob("*.json"))
        elif path.is_file():
            hits = [path]
        else:
            hits = sorted(Path(h) for h in glob.glob(p))
        if not hits:
            raise ReportError(f"{p}: no such run file, folder or glob match")
        out.extend(hits)
    return list(dict.fromkeys(out))


def _flops(row: dict) -> float:
    return 2.0 * row["M"] * row["K"] * row["N"]


def load_run(path: Path) -> tuple[dict, list[dict]]:
    """One run's metadata and its rows (one per case)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); is it truncated?") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    machine = data.get("machine_info") or {}
    facts = machine.get("matmul") or {}
    peak = (facts.get("fp32_peak") or {}).get("gflops")
    meta = {
        "file": str(path),
        "profile": facts.get("profile", "unknown"),
        "cpu": facts.get("cpu_model") or machine.get("cpu", {}).get("brand_raw", "unknown"),
        "commit": (data.get("commit_info") or {}).get("id", "")[:10],
        "dirty": bool((data.get("commit_info") or {}).get("dirty", False)),
        "datetime": data.get("datetime", ""),
        "peak_gflops": peak,
        "peak_method": (facts.get("fp32_peak") or {}).get("method"),
        "tvm": facts.get("tvm_version"),
    }
    rows = []
    for b in data["benchmarks"]:
        params, stats, extra = b.get("params") or {}, b.get("stats") or {}, b.get("extra_info") or {}
        if not set(KEY) <= set(params) or not {"K", "N"} <= set(extra) or "median" not in stats:
            continue  # not a case of this suite's grid
        row = {k: params[k] for k in KEY}
        row.update(K=int(extra["K"]), N=int(extra["N"]), M=int(row["M"]), kind=extra.get("kind", "tvm"))
        median, mean = float(stats["median"]), float(stats["mean"])
        row.update(
            median_s=median,
            iqr_s=float(stats.get("iqr", 0.0)),
            q1_s=float(stats.get("q1", median)),
            q3_s=float(stats.get("q3", median)),
            cv=float(stats.get("stddev", 0.0)) / mean if mean else 0.0,
            rounds=int(stats.get("rounds", 0)),
            gflops=_flops(row) / median / 1e9,
            speedup_vs_numpy_paired=extra.get("speedup_vs_numpy"),
            agreement=extra.get("agreement"),
            agreement_check=extra.get("agreement_check"),
            agreement_median_s=extra.get("agreement_median_s"),
        )
        row["pct_peak"] = 100 * row["gflops"] / peak if peak else None
        rows.append(row)
    if not rows:
        raise ReportError(f"{path}: holds no cases of this suite (params kernel, M, variant, layout and K, N)")
    return meta, rows


def load_runs(paths: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs table and the long table of cases, with a unique ``run`` label each."""
    metas, frames = [], []
    for path in paths:
        meta, rows = load_run(path)
        metas.append(meta)
        frames.append(pd.DataFrame(rows).assign(file=str(path)))
    runs = pd.DataFrame(metas)
    stems = [Path(f).stem for f in runs["file"]]
    labels = [f"{p}/{s}" for p, s in zip(runs["profile"], stems)] if len(set(stems)) < len(stems) else stems
    if len(set(labels)) < len(labels):
        labels = [str(Path(f).with_suffix("")) for f in runs["file"]]
    runs.insert(0, "run", labels)
    cases = pd.concat(frames, ignore_index=True).merge(runs[["file", "run", "profile"]], on="file")
    return runs, cases.drop(columns="file")


# --------------------------------------------------------------------------- tables
def geomean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and not pd.isna(v) and v > 0]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def _manual_variants() -> set[str]:
    from .variants import variant_names

    return set(variant_names(family=MANUAL_FAMILY))


def latency_table(cases: pd.DataFrame, cv_threshold: float = CV_THRESHOLD) -> pd.DataFrame:
    out = cases[["run", *KEY, "median_s", "iqr_s", "cv", "rounds", "gflops", "pct_peak"]].copy()
    out["median_ms"] = out.pop("median_s") * 1e3
    out["iqr_ms"] = out.pop("iqr_s") * 1e3
    out["noisy"] = out["cv"] > cv_threshold
    return out[["run", *KEY, "median_ms", "iqr_ms", "cv", "noisy", "rounds", "gflops", "pct_peak"]].sort_values(
        ["run", "kernel", "layout", "M", "variant"], ignore_index=True
    )


def speedup_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Speedup of every case over each reference run on the same shape."""
    shape = ["run", "kernel", "M", "layout"]
    out = cases[[*shape, "variant", "median_s", "cv", "gflops", "speedup_vs_numpy_paired"]].copy()
    times = cases.set_index([*shape, "variant"])["median_s"]

    def ref_time(name: str) -> pd.Series:
        sel = times.xs(name, level="variant") if name in times.index.get_level_values("variant") else None
        return sel if sel is not None else pd.Series(dtype=float)

    manual = _manual_variants()
    best = (
        cases[cases["variant"].isin(manual)].groupby(shape)["median_s"].min()
        if cases["variant"].isin(manual).any()
        else pd.Series(dtype=float)
    )
    idx = pd.MultiIndex.from_frame(out[shape])
    for ref, series in (
        ("baseline", ref_time("baseline")),
        ("full", ref_time("full")),
        ("best_manual", best),
        ("numpy", ref_time("numpy")),
        ("metaschedule", ref_time("metaschedule")),
    ):
        ref_s = series.reindex(idx).to_numpy(dtype=float) if len(series) else np.full(len(out), np.nan)
        out[f"vs_{ref}"] = ref_s / out["median_s"].to_numpy()
    return out.drop(columns="median_s").sort_values(["run", "kernel", "layout", "M", "variant"], ignore_index=True)


def geomean_table(speedups: pd.DataFrame) -> pd.DataFrame:
    cols = ["gflops"] + [c for c in speedups.columns if c.startswith("vs_")] + ["speedup_vs_numpy_paired"]
    rows = []
    for (run, variant, layout), grp in speedups.groupby(["run", "variant", "layout"], sort=True):
        for kernel, sub in [*sorted(grp.groupby("kernel")), ("all", grp)]:
            row = {"run": run, "kernel": kernel, "variant": variant, "layout": layout, "shapes": len(sub),
                   "max_cv": float(sub["cv"].max())}
            row.update({c: geomean(sub[c]) for c in cols})
            rows.append(row)
    out = pd.DataFrame(rows)
    return out.rename(columns={"gflops": "gflops_geomean"})


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


def compare_runs(
    cases: pd.DataFrame, base: str, threshold: float = REGRESSION_THRESHOLD, cv_threshold: float = CV_THRESHOLD
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latency ratios of every other run over ``base``, case by case."""
    if base not in set(cases["run"]):
        raise ReportError(f"base run {base!r} is not among the runs: {', '.join(sorted(set(cases['run'])))}")
    ref = cases[cases["run"] == base].set_index(KEY)
    rows = []
    for run, grp in cases[cases["run"] != base].groupby("run", sort=False):
        joined = grp.set_index(KEY).merge(
            ref[["median_s", "cv", "q1_s", "q3_s"]], left_index=True, right_index=True, how="inner", suffixes=("", "_base")
        )
        for key, r in joined.iterrows():
            ratio = r["median_s"] / r["median_s_base"]
            # slower beyond the threshold AND beyond the noise: the run's
            # interquartile range lies wholly above the base's
            separated = bool(r["q1_s"] > r["q3_s_base"])
            rows.append({
                "base": base, "run": run, **dict(zip(KEY, key, strict=True)),
                "base_ms": r["median_s_base"] * 1e3, "run_ms": r["median_s"] * 1e3, "ratio": ratio,
                "noisy": bool(max(r["cv"], r["cv_base"]) > cv_threshold),
                "iqr_separated": separated,
                "regression": bool(ratio > 1 + threshold and separated),
            })
    cols = ["base", "run", *KEY, "base_ms", "run_ms", "ratio", "noisy", "iqr_separated", "regression"]
    comp = pd.DataFrame(rows, columns=cols)
    geo = []
    for run, grp in comp.groupby("run", sort=False):
        for kernel, sub in [*sorted(grp.groupby("kernel")), ("all", grp)]:
            geo.append({"base": base, "run": run, "kernel": kernel, "cases": len(sub), "ratio_geomean": geomean(sub["ratio"]),
                        "regressions": int(sub["regression"].sum())})
    return comp, pd.DataFrame(geo, columns=["base", "run", "kernel", "cases", "ratio_geomean", "regressions"])


def build_report(
    paths: Sequence[str | Path] = (),
    *,
    storage: Path = STORAGE,
    base: str | None = None,
    threshold: float = REGRESSION_THRESHOLD,
    cv_threshold: float = CV_THRESHOLD,
) -> Report:
    if threshold <= 0 or cv_threshold <= 0:
        raise ReportError(f"thresholds must be positive, got threshold={threshold}, cv_threshold={cv_threshold}")
    runs, cases = load_runs(find_runs(paths, storage))
    runs = runs.sort_values("datetime", ignore_index=True, kind="stable")
    speedups = speedup_table(cases)
    report = Report(
        runs=runs,
        latency=latency_table(cases, cv_threshold),
        speedups=speedups,
        geomeans=geomean_table(speedups),
        agreement=agreement_table(cases),
        settings={"threshold": threshold, "cv_threshold": cv_threshold},
    )
    if len(runs) > 1 or base is not None:
        base = base or runs["run"].iloc[0]
        report.comparison, report.comparison_geomeans = compare_runs(cases, base, threshold, cv_threshold)
        report.settings["base"] = base
    return report


# --------------------------------------------------------------------------- output
def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        if pd.isna(value):
            return ""
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs ``tabulate``)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_text(report: Report) -> str:
    """The report as printed on the terminal."""
    parts = []
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 30,
                           "display.float_format", lambda v: f"{v:.4g}"):
        for name, df in report.tables().items():
            parts.append(f"== {name} ==\n{df.to_string(index=False) if not df.empty else '(none)'}")
        parts.append(f"== agreement summary ==\n{agreement_summary(report.agreement).to_string(index=False)}")
    noisy = int(report.latency["noisy"].sum())
    parts.append(f"{noisy} of {len(report.latency)} cases noisy (CV > {report.settings['cv_threshold']:.0%})")
    if report.comparison is not None:
        n = len(report.regressions)
        parts.append(
            f"{n} regression(s) beyond {report.settings['threshold']:.0%} against {report.settings['base']}"
            if n else f"no regression beyond {report.settings['threshold']:.0%} against {report.settings['base']}"
        )
    return "\n\n".join(parts)


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Report, out: Path) -> list[Path]:
    """Each table as CSV, and all of them in ``report.md``; returns the files written."""
    written = []
    md = ["# Benchmark report", ""]
    for name, df in [*report.tables().items(), ("agreement_summary", agreement_summary(report.agreement))]:
        path = out / f"{name}.csv"
        atomic_write(path, df.to_csv(index=False))
        written.append(path)
        md += [f"## {name}", "", to_markdown(df) if not df.empty else "(none)", ""]
    path = out / "report.md"
    atomic_write(path, "\n".join(md))
    written.append(path)
    return written


def _save_png(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def plot_report(report: Report, out: Path) -> list[Path]:
    """PNG plots: GFLOP/s versus M per kernel (one line per variant, IQR as
    error bars), and a heatmap of GFLOP/s across kernels, M and variants, per run.

    Raises
    ------
    ImportError
        matplotlib is not installed; the message names the extra to install.
    """
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(f"plots need matplotlib ({err}); install the extra: pip install -e '.[plot]'") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    lat = report.latency
    for (run, layout), grp in lat.groupby(["run", "layout"]):
        safe = f"{run}-{layout}".replace("/", "_")
        for kernel, sub in grp.groupby("kernel"):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for variant, line in sub.groupby("variant"):
                line = line.sort_values("M")
                gf = line["gflops"].to_numpy()
                # IQR of the latency mapped to GFLOP/s: an asymmetric bar around the median
                med = line["median_ms"].to_numpy()
                half = line["iqr_ms"].to_numpy() / 2
                lo = gf - gf * med / (med + half)
                hi = gf * med / np.maximum(med - half, 1e-12) - gf
                ax.errorbar(line["M"], gf, yerr=[lo, hi], marker="o", capsize=3, label=variant)
            ax.set(xscale="log", xlabel="M (tokens)", ylabel="GFLOP/s", title=f"{kernel} ({layout}) - {run}")
            ax.set_xticks(sorted(sub["M"].unique()), labels=[str(m) for m in sorted(sub["M"].unique())])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            path = out / f"gflops-{kernel}-{safe}.png"
            _save_png(fig, path)
            written.append(path)
        table = grp.pivot_table(index=["kernel", "variant"], columns="M", values="gflops", aggfunc="median")
        fig, ax = plt.subplots(figsize=(5.5 + 0.7 * table.shape[1], 1.5 + 0.35 * table.shape[0]))
        im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis")
        ax.set_xticks(range(table.shape[1]), labels=[str(c) for c in table.columns])
        ax.set_yticks(range(table.shape[0]), labels=[f"{k} / {v}" for k, v in table.index])
        for (r, c), v in np.ndenumerate(table.to_numpy(dtype=float)):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7, color="w")
        ax.set(xlabel="M (tokens)", title=f"GFLOP/s across kernels - {run} ({layout})")
        fig.colorbar(im, ax=ax, label="GFLOP/s")
        path = out / f"heatmap-{safe}.png"
        _save_png(fig, path)
        written.append(path)
    return written


__all__ = [
    "AGREEMENT_TOLERANCE",
    "CV_THRESHOLD",
    "REGRESSION_THRESHOLD",
    "Report",
    "ReportError",
    "agreement_summary",
    "agreement_table",
    "atomic_write",
    "build_report",
    "compare_runs",
    "find_runs",
    "geomean",
    "geomean_table",
    "latency_table",
    "load_run",
    "load_runs",
    "plot_report",
    "speedup_table",
    "to_markdown",
    "to_text",
    "write_report",
]
