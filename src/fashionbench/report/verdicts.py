"""Whether our number agrees with a write-up's: Student's t on our seeds' spread.
"""
from __future__ import annotations

import math

from scipy.stats import t as student_t


def t_975(df: int) -> float:
    """Student's t, two-sided 95% (the 0.975 quantile) at `df` degrees of freedom: ours is
    estimated from few seeds."""
    return float(student_t.ppf(0.975, df))


def verdict(ours: float | None, seed: float, seed_pm: float | None, ours_std: float = 0.0, seeds: int = 1) -> str:
    """Whether we reproduced the write-up's number (all values in %), from both spreads.

    Ours is a mean over `seeds` seeds with sample std s. Where the write-up gives a ± (its std), the gap
    is reproduced within sqrt((2 ±)² + (t s / sqrt(n))²): two of its stds, and Student's t (95%,
    n - 1 degrees of freedom) of our mean's standard error. Where it gives none, its number is one
    run, taken to vary as ours do: the gap is reproduced within our 95% prediction interval for one
    more run, t s sqrt(1 + 1/n). With one seed of ours and no ± from the write-up there is no spread to
    judge by, and the verdict falls back to a rough 1 point and says so.
    """
    if ours is None or ours != ours:
        return "no result"
    diff = ours - seed
    side = "higher" if diff > 0 else "lower"
    if seeds < 2:
        if seed_pm is None:
            return ("reproduced (one seed, within 1 point)" if abs(diff) <= 1.0
                    else f"{side} than the write-up (one seed, beyond 1 point)")
        margin = 2 * seed_pm
    elif seed_pm is None:
        margin = t_975(seeds - 1) * ours_std * math.sqrt(1 + 1 / seeds)
    else:
        margin = math.hypot(2 * seed_pm, t_975(seeds - 1) * ours_std / math.sqrt(seeds))
    return f"reproduced (within ±{margin:.2f})" if abs(diff) <= margin else f"{side} than the write-up (beyond ±{margin:.2f})"
