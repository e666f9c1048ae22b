"""Latency statistics: per-iteration durations in, a flat millisecond summary out."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending values, interpolating linearly between ranks."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    rank = q / 100.0 * (len(sorted_values) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """Summarise durations in seconds as milliseconds: mean, std, min, p50, p90, p99, max, cv, fps, n.

    ``std`` is the population standard deviation, ``cv`` is std / mean and ``fps`` is 1000 / mean.
    """
    if not seconds:
        raise ValueError("summarize needs at least one duration")
    ms = sorted(s * 1000.0 for s in seconds)
    n = len(ms)
    mean = math.fsum(ms) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in ms) / n)
    return {
        "mean": mean,
        "std": std,
        "min": ms[0],
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1],
        "cv": std / mean if mean > 0 else 0.0,
        "fps": 1000.0 / mean if mean > 0 else math.inf,
        "n": n,
    }
