"""The mean ± sample std that train, evaluate and the report all give (one definition for all three).
"""
from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

