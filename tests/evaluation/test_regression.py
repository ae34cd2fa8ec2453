"""The regression call on synthetic A/B pairs of block medians, with known answers."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from kedro_edge.evaluation.regression import pairs_of, regression, smallest_p_value


def blocks(median_ms: float, noise: float, n: int = 10, seed: int = 0) -> list[float]:
    return list(median_ms * (1 + np.random.default_rng(seed).normal(0, noise, n)))


def test_identical_samples_are_never_called():
    same = blocks(1.0, 0.05, seed=1)
    r = regression(same, list(same), alpha=0.5, tolerance=0.0)  # even at a lax alpha, no tolerance
    assert r["p_value"] == 1.0 and r["slowdown"] == 0.0 and not r["regressed"]


def test_a_consistent_slowdown_in_every_pair_is_called_with_the_smallest_p():
    base = blocks(1.0, 0.01, seed=2)
    r = regression([b * 1.10 for b in base], base)
    assert r["slower_pairs"] == r["pairs"] == 10
    assert r["p_value"] == pytest.approx(1 / 2**10)  # exact: all 10 signs positive
    assert r["regressed"] and r["slowdown"] == pytest.approx(0.10)
    assert r["test"] == "Wilcoxon signed-rank"


def test_a_slowdown_in_one_pair_only_is_not_called():
    base = blocks(1.0, 0.01, seed=3)
    one_slow = [b * (1.5 if i == 4 else 1.0) for i, b in enumerate(base)]
    r = regression(one_slow, base, alpha=0.05, tolerance=0.0)
    assert r["p_value"] == pytest.approx(0.5)  # the nine equal pairs say nothing; one sign of one
    assert not r["regressed"]


def test_a_slowdown_in_one_pair_among_noisy_pairs_is_not_called():
    base = blocks(1.0, 0.01, seed=4)
    jitter = blocks(1.0, 0.01, seed=5)
    cand = [b * j * (1.5 if i == 0 else 1.0) for i, (b, j) in enumerate(zip(base, jitter, strict=True))]
    r = regression(cand, base, alpha=0.05, tolerance=0.0)
    assert r["p_value"] > 0.05 and not r["regressed"]


def test_drift_within_pairs_in_opposite_directions_cancels():
    # the device slows 4% across each pair: A B pairs make the candidate look faster, B A pairs slower
    base = [1.0] * 10
    cand = [1.0 / 1.04 if i % 2 == 0 else 1.04 for i in range(10)]
    r = regression(cand, base, alpha=0.05, tolerance=0.0)
    assert r["slower_pairs"] == 5 and r["p_value"] > 0.4 and not r["regressed"]


def test_drift_between_pairs_cancels_where_an_unpaired_test_misses_the_slowdown():
    # the device heats up 3% per pair; the candidate is 6% slower than current in every pair
    base = [1.0 * 1.03**i for i in range(10)]
    cand = [b * 1.06 for b in base]
    unpaired = mannwhitneyu(cand, base, alternative="greater").pvalue
    assert unpaired > 0.05  # the drift swamps the difference between the two sets
    r = regression(cand, base, alpha=0.05, tolerance=0.05)
    assert r["p_value"] == pytest.approx(1 / 2**10) and r["regressed"]


def test_a_significant_but_small_slowdown_is_within_tolerance():
    base = blocks(1.0, 0.002, seed=6)
    r = regression([b * 1.03 for b in base], base, tolerance=0.05)
    assert r["p_value"] < 1e-3  # real ...
    assert not r["regressed"]  # ... but smaller than 5%


def test_faster_is_never_a_regression():
    base = blocks(1.0, 0.01, seed=7)
    r = regression([b * 0.5 for b in base], base)
    assert not r["regressed"] and r["slowdown"] < -0.4 and r["p_value"] == 1.0


def test_three_pairs_can_never_reach_alpha_0_05():
    r = regression([1.3, 1.3, 1.3], [1.0, 1.0, 1.0], alpha=0.05)  # as slow as it gets, every pair
    assert r["p_value"] == pytest.approx(0.125) == r["smallest_p"]
    assert not r["regressed"]


@pytest.mark.parametrize(("pairs", "p"), [(3, 0.125), (4, 0.0625), (5, 0.03125), (10, 1 / 1024)])
def test_smallest_p_is_one_over_two_to_the_pairs_and_the_exact_test_reaches_it(pairs, p):
    assert smallest_p_value(pairs) == p
    r = regression([2.0] * pairs, [1.0] * pairs)
    assert r["p_value"] == pytest.approx(p)
    assert pairs_of(pairs) == pairs  # the agent measures one A/B pair per block


def test_mismatched_or_too_few_blocks_are_refused():
    with pytest.raises(ValueError, match="at least 3 blocks"):
        regression([1.0, 1.1], [1.0, 1.0])
    with pytest.raises(ValueError, match="one candidate and one current block median per pair"):
        regression([1.0, 1.1, 1.2], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        regression([1.0, 0.0, 1.2], [1.0, 1.0, 1.0])
