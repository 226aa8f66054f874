"""The report as text, as files (CSV and Markdown) and as PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.store import atomic_write
from ..core.tables import to_markdown
from ..measure.grid import widest_cases
from .tables import REGRESSION_THRESHOLD, Report, agreement_summary


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
    inconclusive = int(report.latency["inconclusive"].sum())
    if inconclusive:
        parts.append(f"{inconclusive} of {len(report.latency)} cases inconclusive: their group's intervals never got "
                     "tight within its time budget; do not read them as clean figures")
        widest = _widest(report.latency)
        if widest:
            parts.append(f"the case whose interval was widest in those groups: {widest}")
    floors = report.latency["noise_floor"].dropna()
    if len(floors):
        parts.append(f"A/A noise floor: differences below {100 * floors.max():.1f}% are noise in these runs "
                     f"(median shape {100 * floors.median():.1f}%)")
    if report.comparison is not None:
        n = len(report.regressions)
        norm = report.settings.get("normalize", "none")
        how = ("significant and beyond the noise floor and the references' drift"
               if (report.comparison["method"] == "samples").all()
               else "significant and beyond the noise floor and the references' drift (runs without samples: beyond "
                    f"{report.settings['threshold'] or REGRESSION_THRESHOLD:.0%} with IQRs apart)")
        what = f"{n} regression(s)" if n else "no regression"
        comp = report.comparison
        unchanged = int((comp["beyond_floor"] & (comp["same_code"] == True)).sum())  # noqa: E712
        read = set(report.comparison["estimator"]) or {report.settings["estimator"]}
        parts.append(f"{what} against {report.settings['base']} ({how}; ratios of "
                     + ("best times, the fastest samples" if read == {"best"} else "medians" if read == {"median"}
                        else "best times, medians where a run saved no samples")
                     + {"numpy": ", each case relative to numpy in its own rounds)",
                        "peak": ", each case relative to the FP32 peak probe in its own rounds)"}.get(norm, ")"))
        if unchanged:
            parts.append(f"{unchanged} case(s) slower beyond the floor, significantly, with the same machine code in "
                         "both runs (same_code): not regressions of the code; the machine or the process moved")
    parts += [f"skipped {path}: {reason}" for path, reason in report.settings.get("skipped", [])]
    return "\n\n".join(parts)


def _widest(latency: pd.DataFrame) -> str:
    """Over the inconclusive groups (one per run, kernel, M and layout), how often each case had the widest
    interval: ``"torch in 13, metaschedule in 6"`` (runs saved before the grid named it are left out)."""
    groups = latency[latency["widest_case"].notna()].drop_duplicates(["run", "kernel", "M", "layout"])
    return widest_cases(groups[["inconclusive", "widest_case"]].to_dict("records"))


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


__all__ = ["plot_report", "to_text", "write_report"]
