"""Does NumPy measured inside the suite agree with NumPy measured alone?

Inside the suite NumPy shares its process with TVM (runtime pool started
and just used) and is timed after a quiet spell, 3 warm-up calls and the
median of ``calls`` calls, as ``bench/`` does. Alone means a fresh process
that imports NumPy only (:func:`matmul.references.numpy_alone`).

One such pair is not enough on a shared VM: NumPy alone, in fresh
processes a second apart, ranged 0.92-1.30 ms on qkv M=128. So the two are
alternated (suite, alone, alone, suite, ...) and the figure per shape is the
median of the per-pair ratios; the geometric mean summarises the shapes.
The per-case bracket that ``bench/`` saves (``agreement`` in ``extra_info``)
is the same comparison, once.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pandas as pd

from ..core.tables import geomean
from ..core.workloads import Workload
from .candidates import prepare
from .references import numpy_alone
from .timing import median_seconds, wait_for_quiet

#: Agreement tolerances: |ratio - 1| within these is agreement (the report reads them too).
AGREEMENT_TOLERANCE = {"time_evaluator": 0.05, "numpy_alone": 0.10}

#: NumPy inside versus alone: the report's tolerance for the same check.
NUMPY_TOLERANCE = AGREEMENT_TOLERANCE["numpy_alone"]


def numpy_agreement(
    loads: Sequence[Workload],
    *,
    layout: str = "NN",
    alternations: int = 6,
    calls: int = 20,
    tvm_variant: str = "full",
    progress=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-shape suite/alone ratios and their geometric mean.

    Returns
    -------
    (table, summary)
        ``table``: one row per shape with the median suite and alone times,
        the median per-pair ratio and whether it is within
        :data:`NUMPY_TOLERANCE`. ``summary``: shapes, geometric mean of the
        ratios and how many shapes agree.
    """
    if alternations < 2 or alternations % 2:
        raise ValueError(f"alternations must be an even number >= 2, got {alternations}")
    if not loads:
        raise ValueError("no workloads")
    rows = []
    for n, w in enumerate(loads, 1):
        ref = prepare("numpy", w.shape, layout=layout)
        tvm = prepare(tvm_variant, w.shape, layout=layout)  # the TVM pool started and in use, as in the suite
        suite, alone = [], []
        for i in range(alternations):
            for side in ("suite", "alone") if i % 2 == 0 else ("alone", "suite"):
                if side == "suite":
                    for _ in range(3):
                        tvm.call()
                    with ref.pool():
                        suite.append(median_seconds(ref.call, calls=calls))
                else:
                    wait_for_quiet()
                    alone.append(numpy_alone([w.shape], layout=layout, threads=ref.threads, calls=calls)[w.shape])
        ratios = [s / a for s, a in zip(suite, alone, strict=True)]
        ratio = statistics.median(ratios)
        rows.append({
            "kernel": w.kernel, "M": w.M, "layout": layout,
            "suite_ms": statistics.median(suite) * 1e3, "alone_ms": statistics.median(alone) * 1e3,
            "ratio": ratio, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "agrees": abs(ratio - 1) <= NUMPY_TOLERANCE,
        })
        if progress:
            progress(f"[{n}/{len(loads)}] {w.id}: suite/alone {ratio:.3f} (pairs {min(ratios):.2f}-{max(ratios):.2f})")
    table = pd.DataFrame(rows)
    summary = pd.DataFrame([{
        "shapes": len(table), "ratio_geomean": geomean(table["ratio"]),
        "agreeing": int(table["agrees"].sum()), "tolerance": NUMPY_TOLERANCE,
    }])
    return table, summary


__all__ = ["NUMPY_TOLERANCE", "numpy_agreement"]
