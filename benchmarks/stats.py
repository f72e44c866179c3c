"""Medians, percentiles and ratios of samples (seconds in, milliseconds out where noted)."""
import math


def percentile(values, q):
    """The q-th percentile (0..100), nearest-rank on sorted samples; None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median(values):
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0


def summary_ms(seconds):
    """{n, p50_ms, p99_ms, max_ms} of samples given in seconds."""
    return {
        "n": len(seconds),
        "p50_ms": _ms(median(seconds)),
        "p99_ms": _ms(percentile(seconds, 99)),
        "max_ms": _ms(max(seconds) if seconds else None),
    }


def ratio(value, baseline):
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


def _ms(value):
    return None if value is None else round(value * 1000.0, 2)
