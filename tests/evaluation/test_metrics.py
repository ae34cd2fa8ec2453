"""Each built-in metric against answers worked out by hand, and a user's metric by import path."""

import numpy as np
import pytest

from kedro_edge.errors import ConfigError
from kedro_edge.evaluation.metrics import MetricParams, resolve

LOGITS = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]])
LABELS = np.array([1, 1, 0, 2])


def test_top1_and_topk_are_zero_one_per_sample():
    top1 = resolve("top1")
    assert top1.scores(LOGITS, LABELS).tolist() == [1, 0, 0, 1]
    assert top1.binary and top1.higher_is_better and top1.scale == 100
    top2 = resolve(MetricParams(name="topk", k=2))
    # sample 2: label 1 is second highest (0.3) -> in; sample 3: label 0 is lowest -> out
    assert top2.name == "top2" and top2.scores(LOGITS, LABELS).tolist() == [1, 1, 0, 1]


def test_mae_and_mse_average_a_samples_outputs_and_prefer_lower():
    outputs = np.array([[1.0, 2.0], [0.0, 0.0]])
    targets = np.array([[2.0, 0.0], [0.0, 4.0]])
    assert resolve("mae").scores(outputs, targets).tolist() == [1.5, 2.0]
    assert resolve("mse").scores(outputs, targets).tolist() == [2.5, 8.0]
    assert not resolve("mae").higher_is_better and not resolve("mse").binary
    # one output per sample against (N,) targets
    assert resolve("mae").scores(np.array([[1.0], [3.0]]), np.array([2.0, 3.0])).tolist() == [1.0, 0.0]


def test_multilabel_f1_per_sample():
    logits = np.array([[2.0, -1.0, 3.0], [-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [1.0, 1.0, -1.0]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])
    # [tp 1, 2 predicted, 1 true: 2/3], [nothing either way: 1], [missed the one: 0], [tp 2 of 2 vs 3: 0.8]
    assert resolve("multilabel_f1").scores(logits, targets) == pytest.approx([2 / 3, 1.0, 0.0, 0.8])


def test_miou_averages_over_the_classes_present_in_a_sample():
    target = np.array([[[0, 0], [1, 1]]])  # 2x2: top row class 0, bottom row class 1
    logits = np.zeros((1, 3, 2, 2))
    logits[0, 0, 0, :] = 1  # predicts class 0 on the top row ...
    logits[0, 1, 1, 0] = 1  # ... class 1 bottom-left ...
    logits[0, 2, 1, 1] = 1  # ... and class 2 bottom-right
    # class 0: 2/2, class 1: 1/2, class 2: 0/1 -> (1 + 0.5 + 0) / 3
    assert resolve("miou").scores(logits, target) == pytest.approx([0.5])


def test_a_metric_by_import_path_needs_its_direction_and_one_score_per_sample():
    with pytest.raises(ConfigError, match=r"validation.metric.higher_is_better"):
        resolve("numpy.abs")
    metric = resolve(
        MetricParams(name="tests.evaluation.test_metrics.close_enough", higher_is_better=True, binary=True)
    )
    assert metric.scores(np.array([[1.0], [5.0]]), np.array([1.2, 1.0])).tolist() == [1.0, 0.0]
    broken = resolve(MetricParams(name="tests.evaluation.test_metrics.one_number", higher_is_better=True))
    with pytest.raises(ConfigError, match=r"returned shape \(\) for 2 samples"):
        broken.scores(np.array([[1.0], [5.0]]), np.array([1.2, 1.0]))
    with pytest.raises(ConfigError, match=r"unknown metric 'accuracy'"):
        resolve("accuracy")


def close_enough(outputs, targets):
    return (np.abs(outputs[:, 0] - targets) < 0.5).astype(float)


def one_number(outputs, targets):
    return float(np.abs(outputs[:, 0] - targets).mean())
