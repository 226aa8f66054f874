"""Case-by-case comparison of runs (commits, CPU profiles) that knows the noise.

For cases whose runs kept their raw samples (the interleaved grid saves
``samples_s``), each latency ratio ``run / base`` comes with a bootstrap
interval and a significance test on the two sample sets (Mann-Whitney for
medians, the bootstrap's own p for best times). The ratio is of
**best** times by default (:func:`~matmul.measure.stats.best_time`: the
fastest few samples), which hold from run to run where medians follow the
neighbours' load; ``estimator="median"`` compares typical times instead.
In a normalized comparison (below) the best estimator takes each run's
ratio of best times (the case's over its reference's, both from the same
rounds), the median one the median of the per-round ratios.

A **regression** is then a ratio that is significant *and* further
from 1 than the noise floor: the larger of the two runs' A/A floors for that
shape, by the same estimator where the runs saved it (and of ``threshold``,
when one is given) *and* of a kernel whose machine code changed: a TVM case
saves a digest of its assembly (``code``), and where both runs' digests
agree (``same_code``) the change is the machine's or the process's, never
the code's, so it is shown and not flagged. MetaSchedule's record for MLP
reduce at M = 16 read 1.23x slower in the second of two back-to-back runs
of one commit on ``znver4-2c-simd16-t2``, significant and far beyond the
floor: its hot loop reads B back from the stack, and its speed follows
where the process's pages fall (``evidence/znver4-2c-simd16-t2/hot-loops/``).
Each row names the estimator it was read by (``estimator``): cases of older
runs without samples are read by medians.

With ``normalize="numpy"`` each case is first read relative to NumPy timed
in the same rounds of the same run (its best time over NumPy's; with the
median, each sample over NumPy's sample from its round), so drift that both runs share (a
slower machine, a busier neighbour) cancels; what is left is the case's
speed relative to NumPy, compared across runs. With ``normalize="peak"``
each case is read relative to the FP32 peak probe timed in the same rounds
the same way (the grid times the FMA loop in every group's rounds): a case's time in
units of the probe's call, that is, in clock cycles rather than seconds, so
a clock that drops between runs (turbo, a neighbour's load) cancels while
a kernel that needs more cycles does not. Memory-bound cases keep the part
of the drift that is not the clock.

Older runs without samples fall back to the interquartile rule: a ratio of
medians above ``1 + threshold`` (default 10%) whose IQR lies wholly above the base's.

A run's A/A floor says how far two builds read apart *within* it; between
runs the machine itself moves. So the floor of every case of a shape is also
at least that shape's **drift**: how far the references (NumPy, PyTorch:
code no commit of this project changes) moved between the two runs, after
the same normalisation. On ``emeraldrapids-2c-simd16-t2`` two runs of the
same code had every case of four MLP shapes, NumPy's too, 11-20% slower in
the second (its peak probe 419 against 467-480 GFLOP/s): 31 of 174 cases
flagged against the A/A floor alone (``evidence/README.md``, eighth session).
A change the references also show is the machine's, not the commit's.
Between CPU profiles the references move with the hardware, and that is
what such a comparison is about: there the floor stays the A/A one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.tables import geomeans_by_kernel
from ..measure.references import is_reference
from ..measure.stats import ESTIMATORS, best_time, ratio_of, ratio_of_relative_bests
from .load import CASE, ReportError

#: Without raw samples: a latency ratio above 1 + this (and IQRs apart) is a regression.
FALLBACK_THRESHOLD = 0.10
NORMALIZE = ("none", "numpy", "peak")
COLUMNS = ["base", "run", *CASE, "base_ms", "run_ms", "ratio", "ci_lo", "ci_hi", "p", "floor", "drift", "method",
           "estimator", "inconclusive", "noisy", "iqr_separated", "significant", "beyond_floor", "same_code",
           "regression"]
#: Columns that name one shape of one run (a group of the interleaved grid): a case's, less its variant.
SHAPE = ["run", *(c for c in CASE if c != "variant")]


def _normalized(cases: pd.DataFrame, normalize: str) -> pd.DataFrame:
    """Each case's samples over NumPy's (``numpy``) or the peak probe's (``peak``) from the same rounds."""
    if normalize not in NORMALIZE:
        raise ReportError(f"unknown normalize {normalize!r}; choose one of: {', '.join(NORMALIZE)}")
    if normalize == "none":
        return cases
    if normalize == "numpy":
        numpy = cases[cases["variant"] == "numpy"].set_index(SHAPE)["samples"]
        out = cases[cases["variant"] != "numpy"].copy()
        refs = [numpy.get(tuple(r[k] for k in SHAPE)) for _, r in out.iterrows()]
    else:
        out = cases.copy()
        refs = list(out["peak_samples"]) if "peak_samples" in out else [None] * len(out)
    normed = []
    out["samples_raw"] = out["samples"]
    for s, ref in zip(out["samples"], refs, strict=True):
        if not isinstance(ref, (list, tuple)) or not isinstance(s, (list, tuple)) or len(ref) != len(s):
            normed.append(None)
        else:
            normed.append([a / b for a, b in zip(s, ref, strict=True)])
    out["samples"] = normed
    out["ref_samples"] = [ref if s else None for s, ref in zip(normed, refs, strict=True)]
    out["median_s"] = [float(np.median(s)) if s else math.nan for s in normed]  # the median of per-round ratios
    out["best_s"] = [best_time(s) / best_time(ref) if n else math.nan  # the ratio of best times
                     for n, s, ref in zip(normed, out["samples_raw"], refs, strict=True)]
    missing = out["samples"].isna()
    if missing.all():
        need = ("numpy timed in the same interleaved rounds as the cases (runs saved by the interleaved grid with "
                "numpy among --variants)" if normalize == "numpy" else
                "the FP32 peak probe's samples from the cases' own rounds (runs saved by the interleaved grid "
                "since peak_samples_s was added)")
        raise ReportError(f"--normalize {normalize} needs {need}")
    return out[~missing]


def check_estimator(estimator: str) -> str:
    """``estimator`` if it is one of :data:`~matmul.measure.stats.ESTIMATORS`; a ReportError naming them if not."""
    if estimator not in ESTIMATORS:
        raise ReportError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    return estimator


def compare_runs(cases: pd.DataFrame, base: str, threshold: float | None = None, cv_threshold: float = 0.10,
                 normalize: str = "none", estimator: str = "best") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latency ratios of every other run over ``base``, case by case, with intervals where samples allow;
    ``estimator``: the time each run's case is read by, "best" or "median" (see the module's docstring)."""
    check_estimator(estimator)
    if base not in set(cases["run"]):
        raise ReportError(f"base run {base!r} is not among the runs: {', '.join(sorted(set(cases['run'])))}")
    cases = _normalized(cases, normalize)
    ref = cases[cases["run"] == base].set_index(CASE)
    rows = []
    for run, grp in cases[cases["run"] != base].groupby("run", sort=False):
        joined = grp.set_index(CASE).merge(ref, left_index=True, right_index=True, how="inner", suffixes=("", "_base"))
        for key, r in joined.iterrows():
            rows.append(_compare_case(base, run, key, r, threshold, cv_threshold, estimator))
    profiles = cases.groupby("run")["profile"].first() if "profile" in cases else pd.Series(dtype=str)
    same_machine = {run for run, prof in profiles.items() if prof == profiles.get(base)}
    comp = _with_drift(pd.DataFrame(rows, columns=COLUMNS), same_machine)
    cols = ["base", "run", "kernel", "cases", "ratio_geomean", "regressions"]
    parts = [geomeans_by_kernel(grp, ["ratio"], sort=True, extra=lambda g: {"regressions": int(g["regression"].sum())})
             .assign(base=base, run=run).rename(columns={"shapes": "cases", "ratio": "ratio_geomean"})[cols]
             for run, grp in comp.groupby("run", sort=False)]
    return comp, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def _with_drift(comp: pd.DataFrame, same_machine: set[str]) -> pd.DataFrame:
    """Each case's ``drift`` (the largest distance from 1 of its shape's reference ratios, 0 without references)
    raises its ``floor``; ``beyond_floor`` is a significant ratio beyond it, and a ``regression`` one whose machine
    code is not known to be the same in both runs (the one place it is
    decided; for runs without samples ``significant`` is the IQR rule). Only runs of the base's CPU profile
    (``same_machine``) get a drift: between profiles the references move with the hardware, which is what such
    a comparison shows."""
    if comp.empty:
        return comp
    refs = comp[comp["variant"].map(is_reference) & comp["run"].isin(same_machine)]
    drift = (refs.assign(d=(refs["ratio"] - 1).abs()).groupby(SHAPE)["d"].max() if len(refs)
             else pd.Series(dtype=float))
    comp["drift"] = [float(drift.get(tuple(r[k] for k in SHAPE), 0.0)) for _, r in comp.iterrows()]
    comp["floor"] = comp[["floor", "drift"]].max(axis=1)
    comp["beyond_floor"] = comp["significant"].astype(bool) & (comp["ratio"] - 1 > comp["floor"])
    comp["regression"] = comp["beyond_floor"] & (comp["same_code"] != True)  # noqa: E712 - None: not known same
    return comp


def _same_code(code, base) -> bool | None:
    """Whether both runs' kernels had the same assembly digest; None where a run saved none (a library, an
    older run)."""
    if not (isinstance(code, str) and isinstance(base, str)):
        return None
    return code == base


def _known(x) -> bool:
    return x is not None and not pd.isna(x)


def _compare_case(base: str, run: str, key: tuple, r: pd.Series, threshold: float | None,
                  cv_threshold: float, estimator: str) -> dict:
    s, sb = r.get("samples"), r.get("samples_base")
    sampled = isinstance(s, (list, tuple)) and isinstance(sb, (list, tuple)) and len(s) > 1 and len(sb) > 1
    time = "best_s" if estimator == "best" and sampled else "median_s"  # the IQR rule is one of medians
    ratio = r[time] / r[time + "_base"]
    separated = bool(r["q1_s"] > r["q3_s_base"])  # the run's IQR wholly above the base's
    row = {"base": base, "run": run, **dict(zip(CASE, key, strict=True)), "base_ms": r[time + "_base"] * 1e3,
           "run_ms": r[time] * 1e3, "ratio": ratio, "estimator": time[:-2], "ci_lo": math.nan, "ci_hi": math.nan,
           "p": math.nan,
           "noisy": bool(max(r["cv"], r["cv_base"]) > cv_threshold), "iqr_separated": separated,
           "inconclusive": bool(r.get("inconclusive") or r.get("inconclusive_base")),
           "same_code": _same_code(r.get("code"), r.get("code_base"))}
    refs = r.get("ref_samples"), r.get("ref_samples_base")
    if sampled:
        if estimator == "best" and all(isinstance(x, (list, tuple)) for x in refs):  # normalized
            est = ratio_of_relative_bests(r["samples_raw"], refs[0], r["samples_raw_base"], refs[1])
        else:
            est = ratio_of(s, sb, paired=False, estimator=estimator)
        # the A/A floor by the same estimator where the runs saved it (older runs: the medians')
        pick = [r.get(f"noise_floor_best{b}") if estimator == "best" and _known(r.get(f"noise_floor_best{b}"))
                else r.get(f"noise_floor{b}") for b in ("", "_base")]
        floors = [f for f in pick if _known(f)]
        floor = max([*floors, threshold or 0.0])
        row.update(ratio=est.value, ci_lo=est.lo, ci_hi=est.hi, p=est.p, floor=floor, method="samples",
                   significant=est.significant)
    else:
        row.update(floor=FALLBACK_THRESHOLD if threshold is None else threshold, method="iqr", significant=separated)
    return row


__all__ = ["COLUMNS", "FALLBACK_THRESHOLD", "NORMALIZE", "SHAPE", "check_estimator", "compare_runs"]
