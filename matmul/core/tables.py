"""Small table helpers shared by every command that summarises measurements."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The name of the summary row over all kernels.
ALL = "all"


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of the positive, non-missing values (NaN if there are none)."""
    vals = [float(v) for v in values if v is not None and not pd.isna(v) and v > 0]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def geomeans_by_kernel(
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    by: str = "kernel",
    sort: bool = False,
    extra: Callable[[pd.DataFrame], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per value of ``by`` and a last row ``"all"``: ``shapes`` and the geomean of each column.

    ``extra(group)`` adds columns of its own to each row.
    """
    groups = table.groupby(by, sort=sort)
    rows = []
    for key, group in [*groups, (ALL, table)]:
        row = {by: key, "shapes": len(group)}
        if extra is not None:
            row.update(extra(group))
        row.update({c: geomean(group[c]) for c in columns})
        rows.append(row)
    return pd.DataFrame(rows)


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


__all__ = ["ALL", "geomean", "geomeans_by_kernel", "to_markdown"]
