"""Did more tuning help? Two MetaSchedule databases' best records, timed side by side in one run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..core.tables import geomeans_by_kernel
from ..core.workloads import MatmulShape, kernel_of
from .candidates import check_candidate, prepare, prepare_record
from .interleave import BLOCK_S, calls_for, time_interleaved


def compare_databases(
    base_root: str | Path,
    new_root: str | Path,
    shapes: Sequence[tuple[str, MatmulShape]],
    *,
    layout: str = "NN",
    dtype: str = "float32",
    beside: Sequence[str] = ("rule_based", "numpy"),
    blocks: int = 4,
    calls: int = 10,
    progress=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two MetaSchedule databases' best records per shape, timed interleaved with ``beside``.

    For each (label, shape): the best record under ``base_root`` and the
    best under ``new_root`` (for the running CPU profile), each built and
    verified, and every candidate in ``beside`` (variants or references),
    all timed in mirrored blocks in one run. ``new_over_base`` is the new
    database's speedup (above 1: the new record is faster); each ``beside``
    candidate gets its speedup over the new record. ``*_recorded_ms`` is what
    the tuner measured for that record when it was tuned, beside ``*_ms``,
    what it takes now.

    Returns the per-shape table and geometric means per kernel and overall.

    Raises
    ------
    NoRecordError
        A shape has no record in one of the databases (the message names it).
    """
    for name in beside:
        check_candidate(name)
    if not shapes:
        raise ValueError("no shapes to compare")
    rows = []
    for n, (label, shape) in enumerate(shapes, 1):
        cands = {"base": prepare_record("base", shape, base_root, layout=layout, dtype=dtype),
                 "new": prepare_record("new", shape, new_root, layout=layout, dtype=dtype)}
        cands.update((name, prepare(name, shape, layout=layout, dtype=dtype)) for name in beside)
        times = time_interleaved(list(cands.values()), blocks=blocks, calls=calls_for(cands["new"], calls, BLOCK_S))
        med = {k: statistics.median(v) for k, v in zip(cands, times)}
        row = {"shape": label, "M": shape.M, "K": shape.K, "N": shape.N, "layout": layout,
               "base_trials": cands["base"].decisions["trials"], "new_trials": cands["new"].decisions["trials"],
               "base_recorded_ms": cands["base"].decisions["run_us"] * 1e-3,
               "new_recorded_ms": cands["new"].decisions["run_us"] * 1e-3}
        row.update((f"{k}_ms", v * 1e3) for k, v in med.items())
        row.update((f"{k}_gflops", shape.flops / v / 1e9) for k, v in med.items())
        row["new_over_base"] = med["base"] / med["new"]
        row.update((f"{k}_over_new", med["new"] / med[k]) for k in beside)
        row["spread"] = max((max(v) - min(v)) / statistics.median(v) for v in times)
        rows.append(row)
        if progress:
            progress(f"[{n}/{len(shapes)}] {label}: new {med['new'] * 1e3:.3f} ms, base {med['base'] * 1e3:.3f} ms "
                     f"(new {row['new_over_base']:.3f}x)"
                     + "".join(f", {k} {row[f'{k}_over_new']:.3f}x new" for k in beside))
    table = pd.DataFrame(rows)
    table.insert(0, "kernel", [kernel_of(label) for label in table["shape"]])
    ratios = [c for c in table.columns if c.endswith(("_over_base", "_over_new", "_gflops"))]
    return table, geomeans_by_kernel(table, ratios)


__all__ = ["compare_databases"]
