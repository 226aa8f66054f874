"""Read saved pytest-benchmark runs of ``bench/`` into one long table of cases."""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..measure.stats import best_time

#: Default storage of pytest-benchmark.
STORAGE = Path(".benchmarks")
KEY = ["kernel", "M", "variant", "layout"]
#: What makes two runs' cases the same case: the key and the shape (two models share kernel names and M).
CASE = [*KEY, "K", "N"]


class ReportError(ValueError):
    """A run file is missing, unreadable, or not from this suite."""


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


def _number(x) -> float | None:
    """``x`` as a finite float; None for anything else (a bool, text, an int past a float's range, inf, NaN)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def widest_case_of(extra: dict) -> str | None:
    """The case a saved group named as its widest interval (``group_widest_case``), or None: runs saved before the
    grid named it, or anything but a name there."""
    name = extra.get("group_widest_case")
    return name if isinstance(name, str) else None


def _samples(raw, path: Path, case: str, field: str = "samples_s") -> list[float] | None:
    """A case's raw samples (seconds per call, one per interleaved round), checked; None if the run has none."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(_number(x) is not None and x > 0 for x in raw):
        raise ReportError(f"{path}: case {case} has {field} that are not a list of positive seconds")
    return [float(x) for x in raw]


def _object(value, path: Path, field: str) -> dict:
    """A JSON object of a run file ({} where absent or null); a ReportError naming the file and field otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReportError(f"{path}: {field} is {value!r:.60}, not a JSON object")
    return value


def _text(value, path: Path, field: str) -> str:
    """A string field; a ReportError naming the file and field otherwise (null included)."""
    if not isinstance(value, str):
        raise ReportError(f"{path}: {field} is {value!r:.60}, not a string")
    return value


def _stat(stats: dict, name: str, path: Path, case: str, default: float | None = None) -> float:
    """One of a case's stats, a finite number; absent: ``default`` (None: required); a ReportError otherwise."""
    if name not in stats:
        if default is None:
            raise ReportError(f"{path}: case {case} has no stats.{name}")
        return default
    value = _number(stats[name])
    if value is None:
        raise ReportError(f"{path}: case {case} has stats.{name} {stats[name]!r:.60}, not a finite number")
    return value


def is_e2e_case(bench: dict) -> bool:
    """Whether a saved benchmark is a case of the end-to-end layer grid (``bench/test_e2e_bench.py``)."""
    extra, params = bench.get("extra_info") or {}, bench.get("params") or {}
    return extra.get("case_kind") == "e2e" and {"e2e_model", "seq", "schedule"} <= set(params)


def load_run(path: Path) -> tuple[dict, list[dict]]:
    """One run's metadata and its rows (one per case)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ReportError(f"{path}: not UTF-8 text (byte {err.start}); not a pytest-benchmark run") from None
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); is it truncated?") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    machine = _object(data.get("machine_info"), path, "machine_info")
    facts = _object(machine.get("matmul"), path, "machine_info.matmul")
    fp32 = _object(facts.get("fp32_peak"), path, "machine_info.matmul.fp32_peak")
    cpu = _object(machine.get("cpu"), path, "machine_info.cpu")
    commit = _object(data.get("commit_info"), path, "commit_info")
    peak = _number(fp32.get("gflops"))
    meta = {
        "file": str(path),
        "profile": facts.get("profile", "unknown"),
        "cpu": facts.get("cpu_model") or cpu.get("brand_raw", "unknown"),
        "commit": _text(commit.get("id", ""), path, "commit_info.id")[:10],
        "dirty": bool(commit.get("dirty", False)),
        "datetime": _text(data.get("datetime", ""), path, "datetime"),
        "peak_gflops": peak,
        "peak_method": fp32.get("method"),
        "tvm": facts.get("tvm_version"),
    }
    rows = []
    for n, b in enumerate(data["benchmarks"]):
        b = _object(b, path, f"benchmarks[{n}]")
        params, stats, extra = (_object(b.get(k), path, f"benchmarks[{n}].{k}") for k in ("params", "stats",
                                                                                              "extra_info"))
        if not set(KEY) <= set(params) or not {"K", "N"} <= set(extra) or "median" not in stats:
            continue  # not a case of this suite's grid
        row = {k: params[k] for k in KEY}
        case = "-".join(str(params[k]) for k in KEY)
        try:
            row.update(K=int(extra["K"]), N=int(extra["N"]), M=int(row["M"]), kind=extra.get("kind", "tvm"),
                       family=extra.get("family"))
        except (TypeError, ValueError) as err:
            raise ReportError(f"{path}: case {case} has a field of the wrong type ({err})") from None
        median, mean = _stat(stats, "median", path, case), _stat(stats, "mean", path, case)
        if not (median > 0 and mean > 0):
            raise ReportError(f"{path}: case {case} has median {median!r} and mean {mean!r} seconds; "
                              "a measured time must be positive")
        row.update(
            median_s=median,
            iqr_s=_stat(stats, "iqr", path, case, 0.0),
            q1_s=_stat(stats, "q1", path, case, median),
            q3_s=_stat(stats, "q3", path, case, median),
            cv=_stat(stats, "stddev", path, case, 0.0) / mean,
            rounds=int(_stat(stats, "rounds", path, case, 0.0)),
            gflops=_flops(row) / median / 1e9,
            speedup_vs_numpy_paired=extra.get("speedup_vs_numpy"),
            agreement=extra.get("agreement"),
            agreement_check=extra.get("agreement_check"),
            agreement_median_s=extra.get("agreement_median_s"),
            interleaved=bool(extra.get("interleaved", False)),
            inconclusive=bool(extra.get("inconclusive", False)),
            widest_case=widest_case_of(extra),
            noise_floor=_number(extra.get("noise_floor")),
            noise_floor_best=_number(extra.get("noise_floor_best")),
            # timed in several worker processes (bench --processes): how far the case's ratio to the anchor moved
            process_spread=_number(extra.get("process_spread")),
            limit=extra.get("limit") if extra.get("limit") in ("compute", "memory") else None,
            limit_gflops=_number(extra.get("limit_gflops")),
            bandwidth_gbs=_number(extra.get("bandwidth_gbs")),
            samples=_samples(extra.get("samples_s"), path, case),
            peak_samples=_samples(extra.get("peak_samples_s"), path, case, "peak_samples_s"),
        )
        loop = extra.get("hot_loop") if isinstance(extra.get("hot_loop"), dict) else {}  # TVM cases from 12-07 on
        row.update(loads_per_fma=_number(loop.get("loads_per_fma")), stack_loads=_number(loop.get("stack_loads")),
                   code=extra["code"] if isinstance(extra.get("code"), str) else None)
        # the best time (stats.best_time) from the raw samples; none for older runs without them (pytest-benchmark's
        # min is one sample of rounds timed apart, not the same figure)
        row["best_s"] = best_time(row["samples"]) if row["samples"] and len(row["samples"]) > 1 else math.nan
        # the peak probe timed in the case's own rounds where the run has one (its clock is the case's); else the
        # peak measured once for the run
        case_peak = _number(extra.get("peak_gflops_in_rounds")) or peak
        row["pct_peak"] = 100 * row["gflops"] / case_peak if case_peak else None
        row["pct_limit"] = 100 * row["gflops"] / row["limit_gflops"] if row["limit_gflops"] else None
        rows.append(row)
    if not rows and not any(is_e2e_case(b) for b in data["benchmarks"]):
        raise ReportError(f"{path}: holds no cases of this suite (kernel cases with params kernel, M, variant, "
                          "layout and K, N, or end-to-end layer cases)")
    return meta, rows  # no kernel rows: a run of the end-to-end grid only (its table comes from report.e2e)


def load_runs(paths: Iterable[Path], skipped: list[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs table and the long table of cases, with a unique ``run`` label each.

    With a ``skipped`` list, a run file that cannot be used is named there with the reason and left out
    (the others still load); without one, it raises. Either way, no usable run at all is a ReportError.
    """
    metas, frames = [], []
    for path in paths:
        try:
            meta, rows = load_run(path)
        except ReportError as err:
            if skipped is None:
                raise
            skipped.append((str(path), str(err)))
            continue
        metas.append(meta)
        if rows:
            frames.append(pd.DataFrame(rows).assign(file=str(path)))
    if not metas:
        raise ReportError("no usable run: " + "; ".join(reason for _, reason in skipped or []))
    runs = pd.DataFrame(metas)
    stems = [Path(f).stem for f in runs["file"]]
    labels = [f"{p}/{s}" for p, s in zip(runs["profile"], stems)] if len(set(stems)) < len(stems) else stems
    if len(set(labels)) < len(labels):
        labels = [str(Path(f).with_suffix("")) for f in runs["file"]]
    runs.insert(0, "run", labels)
    if not frames:  # end-to-end runs only: no kernel case
        return runs, pd.DataFrame()
    cases = pd.concat(frames, ignore_index=True).merge(runs[["file", "run", "profile"]], on="file")
    return runs, cases.drop(columns="file")


__all__ = ["CASE", "KEY", "STORAGE", "ReportError", "find_runs", "is_e2e_case", "load_run", "load_runs",
           "widest_case_of"]
