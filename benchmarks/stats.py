"""The statistics every benchmark and the soak report with, defined once."""

from __future__ import annotations

import math

import numpy as np


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (q in 0..100), interpolated linearly between the two nearest ranks
    (numpy's default, the 'inclusive' definition): the median of [1, 2, 3, 4] is 2.5. NaN for no values."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs (change of y per unit of x); NaN with fewer than two distinct xs."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])
