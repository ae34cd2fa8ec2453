"""Is the candidate slower than the active release? A statistical call, not a comparison of two numbers.

The agent measures candidate and current interleaved in blocks (A B, B A, ...) on the same
device, so drift and heat hit both. Each block's median is one observation: per-query
latencies within a block are autocorrelated, block medians much less so. A regression is
called only when it is both significant (one-sided Mann-Whitney U, as google/benchmark
does, p < alpha) and larger than a tolerance on the ratio of the medians: a real but
negligible slowdown does not block a release, and noise never does.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from scipy.stats import mannwhitneyu


def regression(
    candidate: list[float], baseline: list[float], alpha: float = 0.05, tolerance: float = 0.05
) -> dict[str, Any]:
    """Compare per-block medians; ``regressed`` iff p < alpha and slowdown > tolerance."""
    if len(candidate) < 3 or len(baseline) < 3:
        raise ValueError("need at least 3 blocks of each to call a regression")
    slowdown = median(candidate) / median(baseline) - 1
    p_value = float(mannwhitneyu(candidate, baseline, alternative="greater").pvalue)
    return {
        "slowdown": slowdown,
        "p_value": p_value,
        "alpha": alpha,
        "tolerance": tolerance,
        "blocks": len(candidate),
        "regressed": bool(p_value < alpha and slowdown > tolerance),
    }
