"""Is the candidate slower than the active release? A statistical call, not a comparison of two numbers.

The agent measures candidate and current interleaved on the same device, one pair of blocks
at a time (A B, then B A, ...), so drift and heat hit both. Each block's median is one
observation: per-query latencies within a block are autocorrelated, block medians much less
so. The two blocks of a pair ran back to back, so the test is paired: a one-sided Wilcoxon
signed-rank test on the per-pair log ratios (candidate / current). Drift *between* pairs (the
device heating up, another process starting) moves both halves of a pair and cancels in the
ratio, where an unpaired test (Mann-Whitney U on the two sets of medians) would count it as
noise or as a difference. A regression is called only when it is both significant (p < alpha)
and larger than a tolerance on the ratio of the medians: a real but negligible slowdown does
not block a release, and noise never does.
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

TEST = "Wilcoxon signed-rank"


def smallest_p_value(pairs: int) -> float:
    """The smallest one-sided p the exact signed-rank test can reach with ``pairs`` pairs.

    Reached when every pair is slower: each of the 2^pairs sign patterns is equally likely
    under no difference, and only one has every sign positive, so p = 1 / 2^pairs (the sign
    test's smallest p is the same). A significance level at or below it can never be met.
    """
    return 0.5**pairs


def pairs_of(blocks: int) -> int:
    """Candidate/current pairs the agent measures with ``--blocks blocks``: one per block (``bench``)."""
    return blocks


def signed_rank_p(log_ratios: list[float]) -> float:
    """One-sided p that the log ratios lean positive (candidate slower); 1.0 when every pair is equal."""
    # imported here: parameter validation (kedro_edge.config) imports this module, and scipy
    # costs a good part of a second that `kedro edge ...` commands don't need
    from scipy.stats import wilcoxon

    nonzero = [r for r in log_ratios if r != 0]
    if not nonzero:
        return 1.0
    method = "exact" if len(nonzero) <= 50 else "asymptotic"  # exact is cheap at these sizes
    return float(wilcoxon(nonzero, alternative="greater", method=method).pvalue)


def regression(
    candidate: list[float], baseline: list[float], alpha: float = 0.05, tolerance: float = 0.05
) -> dict[str, Any]:
    """Compare per-block medians pair by pair; ``regressed`` iff p < alpha and slowdown > tolerance.

    ``candidate[i]`` and ``baseline[i]`` are the medians of the two blocks of pair ``i``.
    """
    if len(candidate) != len(baseline):
        raise ValueError(
            f"need one candidate and one current block median per pair, got {len(candidate)} "
            f"and {len(baseline)}"
        )
    if len(candidate) < 3:
        raise ValueError("need at least 3 blocks of each to call a regression")
    if min(candidate) <= 0 or min(baseline) <= 0:
        raise ValueError("block medians must be positive latencies")
    slowdown = float(median(candidate) / median(baseline) - 1)
    log_ratios = [math.log(c / b) for c, b in zip(candidate, baseline, strict=True)]
    p_value = signed_rank_p(log_ratios)
    return {
        "slowdown": slowdown,
        "p_value": p_value,
        "test": TEST,
        "alpha": alpha,
        "tolerance": tolerance,
        "blocks": len(candidate),
        "pairs": len(candidate),
        "slower_pairs": sum(r > 0 for r in log_ratios),
        "smallest_p": smallest_p_value(len(candidate)),
        "regressed": bool(p_value < alpha and slowdown > tolerance),
    }
