"""What MetaSchedule chose: its tuning records' traces as a table.

Seed 001 read its best traces to learn what the hand schedules lacked: a
cache_write of the accumulator tile, decompose_reduction, an auto-unroll
pragma and a 4-level ``SSRSRS`` tiling of i and j. :func:`trace_features`
reads one record's trace (the sampled tile factors per loop, and the
structural steps) and then replays it, so the parallel and vectorised
extents are those of the scheduled loops, not guesses from the annotations.
:func:`traces_table` does this for the records of every tuned workload in a
profile's database, and :func:`summary_counts` gives the seed's counts (how
often each innermost j factor, unroll step, and so on wins).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from tvm.s_tir import Schedule
from tvm.tirx import ForKind

from ...core.hardware import HostFacts, host_facts
from ...core.kernel import BLOCK, matmul_module
from ...core.store import profile_dir, workload_key
from ...core.workloads import MatmulShape, identify
from .database import FAILED_RUN_S, apply_record, read_ledger, records

_AXES = ("i", "j", "k")


def _loop_kinds(sch: Schedule, block: str) -> list[tuple[str, int]]:
    """(kind, extent) of each loop around ``block``, outermost first."""
    out = []
    for loop in sch.get_loops(sch.get_sblock(block)):
        node = sch.get(loop)
        out.append((ForKind(int(node.kind)).name.lower(), int(node.extent)))
    return out


def trace_features(record, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN") -> dict[str, Any]:
    """The schedule choices in one tuning record.

    Keys: ``tile_i``, ``tile_j`` (4 factors, outer to inner), ``tile_k``
    (2 factors), ``inner_j`` (innermost j factor), ``tiling`` (the tiling
    structure annotation), ``cache_write`` and ``cache_write_depth`` (number
    of tiled loops outside the write-back), ``decompose_reduction``,
    ``unroll_step`` (the auto-unroll pragma's max step), ``parallel_extent``
    (iterations of the parallel loop, 0 if the search left the block serial,
    which it does for small workloads), ``vector_extent`` (lanes of the
    compute block's vectorised loop, 0 if none), ``run_us``.
    """
    trace = record.trace
    decisions = {inst: dec for inst, dec in trace.decisions.items()}
    loop_axis: dict[Any, str] = {}
    seen_block_loops = False
    feats: dict[str, Any] = {"tiling": None, "cache_write": False, "cache_write_depth": None,
                             "decompose_reduction": False, "unroll_step": 0}
    reorder: list[Any] = []
    for inst in trace.insts:
        kind = inst.kind.name
        if kind == "GetLoops" and not seen_block_loops:
            seen_block_loops = True  # the first GetLoops is the compute block's i, j, k
            loop_axis = {rv: ax for rv, ax in zip(inst.outputs, _AXES)}
        elif kind == "SamplePerfectTile":
            axis = loop_axis.get(inst.inputs[0])
            if axis is not None:
                feats[f"tile_{axis}"] = [int(x) for x in decisions[inst]]
        elif kind == "Reorder":
            reorder = list(inst.inputs)
        elif kind == "Annotate" and str(inst.attrs[0]) == "meta_schedule.tiling_structure":
            feats["tiling"] = str(inst.inputs[1])
        elif kind == "CacheWrite":
            feats["cache_write"] = True
        elif kind == "ReverseComputeAt" and feats["cache_write"] and feats["cache_write_depth"] is None:
            loop = inst.inputs[1]
            feats["cache_write_depth"] = reorder.index(loop) + 1 if loop in reorder else None
        elif kind == "DecomposeReduction":
            feats["decompose_reduction"] = True
        elif kind == "Annotate" and str(inst.attrs[0]) == "pragma_auto_unroll_max_step":
            feats["unroll_step"] = int(inst.inputs[1])
    feats["inner_j"] = feats["tile_j"][-1] if "tile_j" in feats else None
    sch = Schedule(matmul_module(shape, dtype, layout))
    apply_record(sch, record)
    loops = _loop_kinds(sch, BLOCK + "_update" if feats["decompose_reduction"] else BLOCK)
    par = [e for k, e in loops if k == "parallel"]
    vec = [e for k, e in loops if k == "vectorized"]
    feats["parallel_extent"] = par[0] if par else 0
    feats["vector_extent"] = vec[0] if vec else 0
    secs = [float(x) for x in record.run_secs]
    feats["run_us"] = sum(secs) / len(secs) * 1e6
    return feats


def record_decisions(record, shape: MatmulShape, *, dtype: str = "float32", layout: str = "NN",
                     facts: HostFacts | None = None, root: str | Path | None = None) -> dict[str, Any]:
    """What a bench case or comparison saves about the record it runs: its
    :func:`trace_features` (``run_us`` is the tuner's measured time), the
    workload's tuned trials (from the ledger), the profile and thread count."""
    facts = facts or host_facts()
    d = trace_features(record, shape, dtype=dtype, layout=layout)
    entry = read_ledger(profile_dir(facts, root)).get(workload_key(shape, dtype, layout))
    d["trials"] = entry.trials if entry else None
    d["profile"] = facts.profile
    d["threads"] = facts.runtime_threads
    return d


def traces_table(
    *, facts: HostFacts | None = None, root: str | Path | None = None, top: int = 1
) -> pd.DataFrame:
    """One row per record (the ``top`` fastest of each tuned workload), sorted by kernel and M."""
    facts = facts or host_facts()
    ledger = read_ledger(profile_dir(facts, root))
    rows = []
    for key, entry in ledger.items():
        shape = entry.shape
        model, kernel = identify(shape)
        for rank, rec in enumerate(records(shape, dtype=entry.dtype, layout=entry.layout, facts=facts,
                                           root=root)[:top], 1):
            f = trace_features(rec, shape, dtype=entry.dtype, layout=entry.layout)
            row = {"model": model, "kernel": kernel, "M": shape.M, "K": shape.K, "N": shape.N,
                   "layout": entry.layout, "dtype": entry.dtype, "rank": rank, "trials": entry.trials}
            for axis, n in (("i", 4), ("j", 4), ("k", 2)):
                for level, factor in enumerate(f.pop(f"tile_{axis}", [None] * n)):
                    row[f"{axis}{level}"] = factor
            row.update(f)
            row["gflops"] = shape.flops / (f["run_us"] * 1e-6) / 1e9
            rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["layout", "dtype", "kernel", "M", "rank"], kind="stable").reset_index(drop=True)
    return df


#: Columns whose value counts :func:`summary_counts` reports.
COUNTED = ("inner_j", "unroll_step", "cache_write", "cache_write_depth", "decompose_reduction",
           "vector_extent", "tiling")


def summary_counts(df: pd.DataFrame, columns: Iterable[str] = COUNTED) -> pd.DataFrame:
    """How often each value of each choice appears among the best records (rank 1)."""
    best = df[df["rank"] == 1] if "rank" in df else df
    rows = []
    for col in columns:
        if col not in best:
            continue
        values = best[col].astype("object").where(best[col].notna(), "none")
        counts = values.map(lambda v: {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v).value_counts()
        for value, n in counts.items():
            rows.append({"choice": col, "value": value, "count": int(n),
                         "share": round(n / len(best), 3) if len(best) else 0.0})
    return pd.DataFrame(rows, columns=["choice", "value", "count", "share"])


__all__ = ["COUNTED", "FAILED_RUN_S", "summary_counts", "trace_features", "traces_table"]
