"""The end-to-end table: one row per saved layer case (``bench/test_e2e_bench.py``) of every run."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .load import ReportError, is_e2e_case, widest_case_of

#: Columns of the table, in order.
COLUMNS = ["run", "model", "seq", "batch", "schedule", "median_ms", "cv", "gflops", "pct_peak", "speedup_vs_torch",
           "speedup_vs_torch_lo", "speedup_vs_torch_hi", "speedup_vs_torch_best", "speedup_vs_none", "matmul_share",
           "noise_floor", "inconclusive", "widest_case"]


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def e2e_rows(path: Path, run: str) -> list[dict]:
    """The e2e cases of one run file (none for a run of the kernel grid only)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read the end-to-end cases ({err})") from None
    rows = []
    for b in data.get("benchmarks") or []:
        params, stats, extra = b.get("params") or {}, b.get("stats") or {}, b.get("extra_info") or {}
        if not is_e2e_case(b):
            continue
        median, mean = _number(stats.get("median")), _number(stats.get("mean"))
        if not (median and median > 0 and mean and mean > 0):
            raise ReportError(f"{path}: e2e case {b.get('name')} has no positive median/mean time")
        ci = extra.get("speedup_vs_torch_ci") or [None, None]
        rows.append({
            "run": run, "model": params["e2e_model"], "seq": int(params["seq"]), "batch": int(extra.get("batch", 1)),
            "schedule": params["schedule"], "median_ms": 1e3 * median,
            "cv": (_number(stats.get("stddev")) or 0.0) / mean, "gflops": _number(extra.get("gflops")),
            "pct_peak": _number(extra.get("pct_peak")), "speedup_vs_torch": _number(extra.get("speedup_vs_torch")),
            "speedup_vs_torch_lo": _number(ci[0]), "speedup_vs_torch_hi": _number(ci[1]),
            "speedup_vs_torch_best": _number(extra.get("speedup_vs_torch_best")),
            "speedup_vs_none": _number(extra.get("speedup_vs_none")),
            "matmul_share": _number(extra.get("matmul_share")), "noise_floor": _number(extra.get("noise_floor")),
            "inconclusive": bool(extra.get("inconclusive", False)),
            "widest_case": widest_case_of(extra),
        })
    return rows


def e2e_table(runs: Iterable[tuple[str, Path]]) -> pd.DataFrame:
    """Every run's e2e cases, ``runs`` as (label, file) pairs; an empty table with the columns when none."""
    rows = [r for run, path in runs for r in e2e_rows(path, run)]
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["run", "model", "seq", "schedule"], ignore_index=True)


__all__ = ["COLUMNS", "e2e_rows", "e2e_table"]
