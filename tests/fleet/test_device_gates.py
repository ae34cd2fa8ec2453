"""The no-regression gate on measurements shaped as the agent reports them."""

from kedro_edge.config import RegressionParams
from kedro_edge.fleet.device_gates import evaluate, no_regression
from kedro_edge.fleet.inventory import Budgets


def measurement(candidate: list[float], current: list[float]) -> dict:
    return {
        "p50_ms": sorted(candidate)[len(candidate) // 2],
        "block_p50_ms": candidate,
        "baseline": {"p50_ms": sorted(current)[len(current) // 2], "block_p50_ms": current},
    }


def test_a_slowdown_in_every_pair_is_refused_and_the_reason_names_test_p_and_alpha():
    current = [1.0 + 0.01 * i for i in range(10)]
    result = no_regression(measurement([c * 1.2 for c in current], current), alpha=0.05, tolerance=0.05)
    assert not result.passed and result.value > 0.19
    assert result.reason.startswith("regression: p50 ")
    assert "one-sided Wilcoxon signed-rank on 10 A/B pairs, 10 slower: p=0.00098, alpha 0.05" in result.reason


def test_an_equal_candidate_passes():
    current = [1.0 + 0.01 * i for i in range(10)]
    result = no_regression(measurement(list(current), current), alpha=0.05, tolerance=0.05)
    assert result.passed and "no regression" in result.reason and "p=1, alpha 0.05" in result.reason


def test_the_gate_is_skipped_when_switched_off_or_with_nothing_active():
    current = [1.0] * 10
    slow = measurement([2.0] * 10, current)
    assert evaluate(slow, Budgets(), RegressionParams(enabled=False)) == []
    (only,) = evaluate({"p50_ms": 2.0, "block_p50_ms": [2.0] * 10}, Budgets(), RegressionParams())
    assert only.passed and "no active release" in only.reason
