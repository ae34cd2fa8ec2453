"""The regression call on synthetic block medians with known answers."""

import numpy as np
import pytest

from kedro_edge.bench.stats import regression


def blocks(median_ms: float, noise: float, n: int = 10, seed: int = 0) -> list[float]:
    return list(median_ms * (1 + np.random.default_rng(seed).normal(0, noise, n)))


def test_same_distribution_is_no_regression():
    r = regression(blocks(1.0, 0.01, seed=1), blocks(1.0, 0.01, seed=2))
    assert not r["regressed"] and r["p_value"] > 0.05 and abs(r["slowdown"]) < 0.02


def test_a_clear_ten_percent_slowdown_is_called():
    r = regression(blocks(1.10, 0.01, seed=1), blocks(1.0, 0.01, seed=2))
    assert r["regressed"] and r["p_value"] < 1e-3 and r["slowdown"] == pytest.approx(0.10, abs=0.02)


def test_a_significant_but_small_slowdown_is_within_tolerance():
    r = regression(blocks(1.03, 0.002, seed=1), blocks(1.0, 0.002, seed=2), tolerance=0.05)
    assert r["p_value"] < 1e-3  # real ...
    assert not r["regressed"]  # ... but smaller than 5%


def test_a_large_but_noisy_difference_on_few_blocks_is_not_significant():
    r = regression([1.2, 0.9, 1.3], [1.0, 1.1, 0.95], alpha=0.05)
    assert r["slowdown"] > 0.05 and r["p_value"] >= 0.05 and not r["regressed"]


def test_faster_is_never_a_regression():
    r = regression(blocks(0.5, 0.01, seed=1), blocks(1.0, 0.01, seed=2))
    assert not r["regressed"] and r["slowdown"] < -0.4


def test_too_few_blocks_is_refused():
    with pytest.raises(ValueError, match="at least 3 blocks"):
        regression([1.0, 1.1], [1.0, 1.0])
