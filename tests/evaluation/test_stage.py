import numpy as np
import pytest

from kedro_edge.config import TimingSpec
from kedro_edge.evaluation.metrics import MetricParams, resolve
from kedro_edge.evaluation.stage import evaluate_stage
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import latency_ms, parity, session

FEW = TimingSpec(warmup=2, min_runs=15, min_seconds=0)


def test_stage_figures_come_from_onnx_runtime(teacher, splits):
    model = to_onnx(teacher, splits.input_shape)
    figures = evaluate_stage(model, teacher, splits, FEW).figures
    assert figures.size_bytes == len(model.SerializeToString())
    assert figures.params == sum(p.numel() for p in teacher.parameters())
    assert figures.macs > figures.params
    assert 0 < figures.latency_p50_ms <= figures.latency_p90_ms
    assert figures.latency_runs >= 15
    assert figures.torch_vs_onnx.top1_agreement == 1.0
    assert figures.torch_vs_onnx.max_abs_diff < 1e-3
    assert 0.5 < figures.accuracy <= 1.0
    assert figures.n == len(splits.y("test"))
    assert figures.accuracy_ci[0] < figures.accuracy <= figures.accuracy_ci[1]


def test_a_users_metric_by_import_path_is_what_the_stage_reports(teacher, splits):
    """A metric the package does not know (the probability given to the right class), by import
    path: its mean and t interval are the stage's figure, per-sample scores kept for pairing."""
    model = to_onnx(teacher, splits.input_shape)
    metric = resolve(
        MetricParams(name="tests.evaluation.test_stage.true_class_probability", higher_is_better=True)
    )
    result = evaluate_stage(model, teacher, splits, FEW, metric=metric)
    top1 = evaluate_stage(model, teacher, splits, FEW).figures
    low, high = result.figures.accuracy_ci
    assert (
        result.scores.shape == (len(splits.y("test")),) and 0 < result.scores.min() < result.scores.max() < 1
    )
    assert result.figures.accuracy == pytest.approx(result.scores.mean())
    assert low < result.figures.accuracy < high
    assert result.figures.accuracy != top1.accuracy  # not top-1 under another name


def true_class_probability(outputs, targets):
    e = np.exp(outputs - outputs.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True))[np.arange(len(targets)), targets]


def test_latency_runs_until_count_and_duration(teacher, splits):
    sess = session(to_onnx(teacher, splits.input_shape))
    assert len(latency_ms(sess, splits.x("test")[:3], TimingSpec(warmup=1, min_runs=40, min_seconds=0))) == 40
    timed = latency_ms(sess, splits.x("test")[:3], TimingSpec(warmup=1, min_runs=1, min_seconds=0.2))
    assert timed.sum() > 0 and len(timed) > 1


def test_parity_counts_top1_and_max_difference():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    b = np.array([[0.9, 0.0], [1.0, 0.5], [2.0, 1.0]])
    assert parity(a, b) == {"top1_agreement": 2 / 3, "max_abs_diff": 1.0}
