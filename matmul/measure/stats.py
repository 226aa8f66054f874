"""Ratios with confidence intervals and significance, from raw timing samples.

Two sample streams are compared by the ratio of their medians. Its
confidence interval comes from a bootstrap:

- *paired* streams (sample ``i`` of both taken in the same interleaved round,
  see :mod:`~matmul.measure.interleave`) are resampled by round, so drift
  that both share cancels in each resampled ratio;
- *independent* streams (two runs, minutes or machines apart) are resampled
  each on its own.

Significance is a two-sided Mann-Whitney U test (normal approximation with
tie correction), the test asv uses before it calls a change. On thousands of
samples a tiny shift is "significant", so a comparison also asks that the
change be larger than the run's A/A noise floor (see :func:`is_change`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence level of every interval.
CI_LEVEL = 0.95
#: Bootstrap resamples for a reported interval (fewer while deciding whether to stop sampling).
BOOTSTRAP = 2000
#: A change is significant below this p-value.
ALPHA = 0.05


@dataclass(frozen=True)
class Ratio:
    """``x / y`` as a ratio of medians, its bootstrap interval, and the Mann-Whitney p-value."""

    value: float
    lo: float
    hi: float
    p: float
    n_x: int
    n_y: int

    @property
    def half_width(self) -> float:
        """Half the interval's width, relative to the ratio (0.03: +-3%)."""
        return (self.hi - self.lo) / 2 / self.value

    @property
    def significant(self) -> bool:
        """p below :data:`ALPHA` and an interval that excludes 1."""
        return self.p < ALPHA and not self.lo <= 1.0 <= self.hi

    def as_dict(self) -> dict:
        return {"ratio": self.value, "ci_lo": self.lo, "ci_hi": self.hi, "p": self.p,
                "half_width": self.half_width, "n": [self.n_x, self.n_y]}


def _clean(samples: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(samples, dtype=float)
    if arr.ndim != 1 or len(arr) < 2:
        raise ValueError(f"{what}: need at least 2 samples, got {len(arr) if arr.ndim == 1 else arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{what}: every sample must be a positive, finite time")
    return arr


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected)."""
    x, y = _clean(x, "x"), _clean(y, "y")
    n1, n2 = len(x), len(y)
    both = np.concatenate([x, y])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average ranks over ties
    i = 0
    ties = 0.0
    while i < len(both):
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0  # every sample equal
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(var)
    return max(min(math.erfc(max(z, 0.0) / math.sqrt(2)), 1.0), 0.0)


def ratio_of_medians(x: Sequence[float], y: Sequence[float], *, paired: bool, level: float = CI_LEVEL,
                     resamples: int = BOOTSTRAP, seed: int = 0) -> Ratio:
    """``median(x) / median(y)`` with a bootstrap interval at ``level`` and the Mann-Whitney p-value.

    ``paired`` resamples rounds (``x[i]`` and ``y[i]`` together; the streams
    must be equally long); otherwise each stream is resampled on its own.
    """
    x, y = _clean(x, "x"), _clean(y, "y")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 100:
        raise ValueError(f"need at least 100 bootstrap resamples, got {resamples}")
    rng = np.random.default_rng(seed)
    if paired:
        if len(x) != len(y):
            raise ValueError(f"paired streams must be equally long, got {len(x)} and {len(y)}")
        idx = rng.integers(0, len(x), size=(resamples, len(x)))
        boot = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    else:
        bx = np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
        by = np.median(y[rng.integers(0, len(y), size=(resamples, len(y)))], axis=1)
        boot = bx / by
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return Ratio(float(np.median(x) / np.median(y)), float(lo), float(hi), mann_whitney_p(x, y), len(x), len(y))


def noise_floor(aa: Ratio) -> float:
    """How far apart two builds of one kernel read: the A/A ratio's distance from 1 or its half-width, whichever
    is larger (0.02: differences below 2% are noise)."""
    return max(abs(aa.value - 1.0), aa.half_width)


def is_change(r: Ratio, floor: float) -> bool:
    """A significant ratio whose distance from 1 exceeds the noise ``floor``."""
    return r.significant and abs(r.value - 1.0) > floor


__all__ = ["ALPHA", "BOOTSTRAP", "CI_LEVEL", "Ratio", "is_change", "mann_whitney_p", "noise_floor",
           "ratio_of_medians"]
