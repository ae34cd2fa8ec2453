"""Accuracy intervals and paired comparisons against known answers."""

import numpy as np
import pytest
from scipy import stats

from kedro_edge.evaluation import statistics


def test_wilson_interval_matches_the_textbook_example():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662
    low, high = statistics.wilson_interval(81, 263)
    assert (low, high) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_wilson_interval_stays_inside_zero_one_at_a_perfect_score():
    low, high = statistics.wilson_interval(360, 360)
    assert high == pytest.approx(1.0)
    assert low == pytest.approx(360 / (360 + 1.959964**2))  # 360/360 does not mean 100%: it means >= 98.9%


def test_accuracy_carries_n_and_its_interval():
    result = statistics.accuracy(np.array([True] * 90 + [False] * 10))
    assert (result.n, result.correct, result.accuracy) == (100, 90, 0.9)
    assert result.ci_low < 0.9 < result.ci_high


def test_exact_mcnemar_is_the_binomial_test_on_discordant_pairs():
    # 10 images only the reference gets right, 2 only the candidate: p = P(X <= 2 | 12, 1/2) * 2
    expected = 2 * sum(stats.binom.pmf(k, 12, 0.5) for k in range(3))
    assert statistics.mcnemar_exact(10, 2) == pytest.approx(expected)
    assert statistics.mcnemar_exact(10, 2) == pytest.approx(0.0386, abs=1e-4)
    assert statistics.mcnemar_exact(0, 0) == 1.0
    assert statistics.mcnemar_exact(5, 5) == 1.0


def _pair(both: int, only_ref: int, only_cand: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([1] * both + [1] * only_ref + [0] * only_cand + [0] * neither, dtype=bool)
    cand = np.array([1] * both + [0] * only_ref + [1] * only_cand + [0] * neither, dtype=bool)
    return ref, cand


def test_paired_comparison_reports_the_drop_its_interval_and_p():
    ref, cand = _pair(4800, 60, 20, 120)  # n = 5000, a 0.8-point drop
    result = statistics.paired(ref, cand)
    assert result.n == 5000
    assert result.diff_points == pytest.approx(-0.8)
    assert result.drop_points == pytest.approx(0.8)
    assert result.p_value == pytest.approx(stats.binomtest(20, 80, 0.5).pvalue)
    # the paired interval: diff +- 1.96 * sqrt((b + c) / n^2 - (b - c)^2 / n^3), in points
    se = 100 * np.sqrt((60 + 20) / 5000**2 - (60 - 20) ** 2 / 5000**3)
    assert result.ci_low_points == pytest.approx(-0.8 - 1.96 * se, abs=0.05)
    assert result.ci_high_points == pytest.approx(-0.8 + 1.96 * se, abs=0.05)
    assert result.ci_high_points < 0  # significant, like the McNemar test
    assert "n=5000" in result.describe()


def test_pairing_sees_what_an_unpaired_comparison_cannot():
    # Same accuracies (96.0% vs 95.5%); the paired test is decisive because the models disagree on few images.
    ref, cand = _pair(4775, 25, 0, 200)
    paired = statistics.paired(ref, cand)
    assert paired.p_value < 1e-6
    unpaired = stats.fisher_exact([[4800, 200], [4775, 225]]).pvalue
    assert unpaired > 0.2


def test_identical_models_differ_by_nothing():
    ref, cand = _pair(900, 0, 0, 100)
    result = statistics.paired(ref, cand)
    assert result.diff_points == 0 and result.p_value == 1.0
    assert result.ci_low_points == result.ci_high_points == 0


def test_paired_needs_the_same_images():
    with pytest.raises(ValueError, match="equal-length"):
        statistics.paired(np.ones(5, bool), np.ones(6, bool))


def test_the_half_width_of_a_paired_difference_matches_its_bootstrap():
    # 5,000 images, 3% discordant and balanced: the bootstrap interval is the normal one
    n, discordant = 5000, 150
    ref = np.ones(n, bool)
    cand = ref.copy()
    cand[: discordant // 2] = False
    ref[n - discordant // 2 :] = False
    boot = statistics.paired(ref, cand)
    half = statistics.paired_half_width(n, discordant / n)
    assert half == pytest.approx((boot.ci_high_points - boot.ci_low_points) / 2, rel=0.05)
    assert half == pytest.approx(0.48, abs=0.01)


def test_images_needed_gives_a_half_width_of_the_budget():
    needed = statistics.images_needed(0.5, 0.03)
    assert needed == 4610  # 1.96^2 * 0.03 / 0.005^2
    assert statistics.paired_half_width(needed, 0.03) == pytest.approx(0.5, abs=0.001)
    assert statistics.images_needed(1.0, 0.03) < needed / 3.9  # four times fewer for twice the budget
