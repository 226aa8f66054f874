"""Where a learned model knows: the domain its records cover and the noise its measurements carry.

A model trained on a sweep knows the M, K and N ranges, layouts and dtypes of its
records and nothing beyond them; :func:`outside` says why a shape lies outside,
so :mod:`.model` keeps the rules' config there instead of extrapolating. The
sweep's own noise (:func:`self_pair_noise`, the rules' config timed against a
second build of itself) is the floor under the margin a prediction must clear.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.workloads import MatmulShape


def self_pair_noise(t: pd.DataFrame) -> float:
    """The sweep's own noise: median ``|log speedup|`` of the rules' config timed against a second build of itself.

    A predicted gain below it cannot be told from a lucky measurement, so the model's margin is never smaller.
    """
    own = t[t["is_rule"] == 1]["speedup_vs_rule"].astype(float)
    own = own[np.isfinite(own) & (own > 0)]
    return float(np.median(np.abs(np.log(own)))) if len(own) else 0.0


def domain_of(t: pd.DataFrame) -> dict:
    """What the model was trained on: the range of M, K and N, of K x N (B's size, which sets the memory level B
    streams from), and the layouts and dtypes seen."""
    kn = t["K"].astype("int64") * t["N"].astype("int64")
    return {"M": [int(t["M"].min()), int(t["M"].max())], "K": [int(t["K"].min()), int(t["K"].max())],
            "N": [int(t["N"].min()), int(t["N"].max())], "KN": [int(kn.min()), int(kn.max())],
            "layouts": sorted({"NT" if v else "NN" for v in t["layout_nt"]}),
            "dtypes": sorted({"float64" if b == 8 else "float32" for b in t["dtype_bytes"]})}


def outside(domain: dict, shape: MatmulShape, dtype: str, layout: str) -> str | None:
    """Why the shape lies outside the trained domain, or None when it lies inside."""
    for dim in ("M", "K", "N"):
        lo, hi = domain[dim]
        v = getattr(shape, dim)
        if not lo <= v <= hi:
            return f"{dim}={v} lies outside the trained {lo}..{hi}"
    if "KN" in domain:  # K and N each inside, B larger or smaller than any trained on (sidecars before 2026-12-06)
        lo, hi = domain["KN"]
        if not lo <= shape.K * shape.N <= hi:
            return (f"B of K x N = {shape.K * shape.N} elements lies outside the trained {lo}..{hi} (it streams from "
                    "another memory level)")
    if layout not in domain["layouts"]:
        return f"layout {layout} was not trained on ({', '.join(domain['layouts'])})"
    if dtype not in domain["dtypes"]:
        return f"dtype {dtype} was not trained on ({', '.join(domain['dtypes'])})"
    return None


def check_domain(d: Any) -> bool:
    """True when ``d`` is a well-formed domain record (positive, ordered spans; non-empty layouts and dtypes)."""

    def span(v):
        return isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v) and v[0] <= v[1]

    return isinstance(d, dict) and all(span(d.get(k)) for k in ("M", "K", "N")) and \
        ("KN" not in d or span(d["KN"])) and \
        all(isinstance(d.get(k), list) and d[k] and all(isinstance(x, str) for x in d[k])
            for k in ("layouts", "dtypes"))


__all__ = ["check_domain", "domain_of", "outside", "self_pair_noise"]
