"""The learned model's held-out picks, timed beside rule_based and MetaSchedule's best in one run."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..core.hardware import HostFacts, host_facts
from ..core.registry import Unavailable, unavailable
from ..core.workloads import MatmulShape
from ..schedules.ml.evaluate import config_of
from ..schedules.template import config_name
from .candidates import prepare
from .interleave import BLOCK_S, calls_for, time_interleaved


def measure_held_out(loo: pd.DataFrame, *, facts: HostFacts | None = None, blocks: int = 4, calls: int = 10,
                     progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Time each held-out pick beside rule_based and MetaSchedule's best, interleaved, in this run.

    Each of ``blocks`` rounds (an even number) times every variant once (at
    least ``calls`` calls, more for short kernels), in mirrored order (A B C,
    C B A, ...: each variant sees the same drift); a variant's time is the
    median of its blocks.
    """
    facts = facts or host_facts()
    rows = []
    for n, r in enumerate(loo.itertuples(index=False), 1):
        key = r.workload
        layout, dtype = key.split("-")[0], key.split("-")[1]
        shape = MatmulShape(r.M, r.K, r.N)
        cfg = config_of(pd.Series(r._asdict()), "pick", shape, facts, dtype)
        cands = {"ml_guided": prepare(config_name(cfg), shape, layout=layout, dtype=dtype),
                 "rule_based": prepare("rule_based", shape, layout=layout, dtype=dtype)}
        if unavailable("metaschedule", shape, dtype=dtype, layout=layout, facts=facts) is None:
            try:
                cands["metaschedule"] = prepare("metaschedule", shape, layout=layout, dtype=dtype)
            except Unavailable:
                pass
        times = time_interleaved(list(cands.values()), blocks=blocks,
                                 calls=calls_for(cands["rule_based"], calls, BLOCK_S))
        med = {k: float(np.median(v)) for k, v in zip(cands, times)}
        row = {"workload": key, "M": r.M, "K": r.K, "N": r.N, "ml_s": med["ml_guided"], "rule_s": med["rule_based"],
               "ms_s": med.get("metaschedule", float("nan"))}
        row["ml_vs_rule"] = row["rule_s"] / row["ml_s"]
        row["ml_vs_metaschedule"] = row["ms_s"] / row["ml_s"]
        rows.append(row)
        if progress:
            progress(f"[{n}/{len(loo)}] {key}: ml_guided {row['ml_vs_rule']:.3f}x rule_based, "
                     f"{row['ml_vs_metaschedule']:.3f}x metaschedule")
    return pd.DataFrame(rows)


__all__ = ["measure_held_out"]
