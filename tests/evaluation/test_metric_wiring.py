"""``validation.metric`` through the statistics, the gates and the parameters: the paired bootstrap
on per-sample scores, a direction that makes a rising error a drop, and keys that name themselves."""

import numpy as np
import pytest

from kedro_edge import config
from kedro_edge.config import GateParams, ValidationParams
from kedro_edge.data.task import Task
from kedro_edge.errors import ConfigError
from kedro_edge.evaluation.gates import evaluate_gates, sample_size_warnings
from kedro_edge.evaluation.metrics import resolve
from kedro_edge.evaluation.records import StageComparison
from kedro_edge.evaluation.statistics import describe
from tests.stage_figures import stage_figures


def _scores(shift: float, n: int = 2000, seed: int = 0):
    """Per-sample IoU-like scores of a reference and a candidate ``shift`` lower on average."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.5, 1.0, n)
    return ref, np.clip(ref - shift + rng.normal(0, 0.05, n), 0, 1)


def test_a_continuous_metric_is_compared_by_the_paired_bootstrap_and_its_own_p_value():
    ref, cand = _scores(0.02)
    c = resolve("miou").paired(ref, cand, 0.95, resamples=4000)
    true_points = 100 * (cand - ref).mean()
    assert c.test == "bootstrap" and c.unit == "points" and c.n == 2000
    assert c.diff_points == pytest.approx(true_points)
    assert c.ci_low_points < true_points < c.ci_high_points
    assert c.ci_high_points - c.ci_low_points < 1.0  # paired: the shared per-image spread cancels
    assert c.p_value == pytest.approx(1 / 4000) and c.drop_points == pytest.approx(-true_points)
    assert "bootstrap p=" in describe(c.to_dict()) and "McNemar" not in describe(c.to_dict())


def test_the_p_value_agrees_with_the_interval_on_a_skewed_difference():
    """Most samples a little better, a few much worse: the mean drops. A signed-rank test would call
    the candidate significantly better; the bootstrap's p and interval both say the mean fell."""
    rng = np.random.default_rng(2)
    ref = rng.uniform(0.6, 0.9, 3000)
    diff = np.where(rng.random(3000) < 0.9, 0.005, -0.08)
    c = resolve("miou").paired(ref, ref + diff, 0.95, resamples=4000)
    assert c.ci_high_points < 0 and c.p_value < 0.05
    edge = resolve("miou").paired(ref, ref + diff - diff.mean() + 1e-4, 0.95, resamples=4000)
    assert edge.ci_low_points < 0 < edge.ci_high_points and edge.p_value > 0.05


def test_no_difference_gives_an_interval_around_zero_and_p_one():
    ref, _ = _scores(0.0)
    c = resolve("miou").paired(ref, ref.copy(), 0.95, resamples=2000)
    assert (c.diff_points, c.ci_low_points, c.ci_high_points, c.p_value) == (0, 0, 0, 1.0)


def test_for_an_error_metric_a_rise_is_a_drop_and_the_gate_refuses_it():
    rng = np.random.default_rng(1)
    teacher_err = rng.uniform(0.1, 0.3, 3000)
    model_err = teacher_err + 0.05 + rng.normal(0, 0.01, 3000)  # the model's error is 0.05 higher
    c = resolve("mae").paired(teacher_err, model_err, 0.95, resamples=4000)
    assert c.unit == "mae" and not c.higher_is_better
    assert c.diff_points == pytest.approx(0.05, abs=0.002) and c.drop_points == pytest.approx(0.05, abs=0.002)
    low, high = c.drop_interval
    assert 0.04 < low < 0.05 < high < 0.06
    stages = {"teacher": stage_figures(), "int8": stage_figures(vs_teacher=StageComparison(clean=c))}
    refused = evaluate_gates(stages, "int8", GateParams(max_metric_drop=0.02), "mae")
    passed = evaluate_gates(stages, "int8", GateParams(max_metric_drop=0.1), "mae")
    by_name = {r.gate: r for r in refused}
    assert not by_name["max_metric_drop"].passed and "mae" in by_name["max_metric_drop"].reason
    assert {r.gate: r.passed for r in passed}["max_metric_drop"]
    # the accuracy-named gates (on by default) do not judge another metric
    assert "max_accuracy_drop" not in by_name


def test_an_accuracy_gate_set_with_another_metric_is_a_config_error_naming_both_keys():
    with pytest.raises(ValueError, match="gates.max_accuracy_drop.*miou.*gates.max_metric_drop"):
        ValidationParams(metric="miou", gates={"max_accuracy_drop": 0.5})
    with pytest.raises(ConfigError) as err:  # as a run says it: one line, the key first, no pydantic prefix
        config.parse(ValidationParams, {"metric": "miou", "gates": {"max_accuracy_drop": 0.5}}, "validation")
    assert str(err.value) == (
        "conf/base/parameters_validation.yml: parameter 'validation.gates.max_accuracy_drop' judges "
        "top-1 accuracy but validation.metric is 'miou': use 'validation.gates.max_metric_drop' "
        "(in the metric's units)"
    )
    with pytest.raises(
        ConfigError, match=r"^conf/base/parameters_validation.yml: parameter 'validation.metric': unknown"
    ):
        config.parse(ValidationParams, {"metric": "accuracy"}, "validation")
    ok = ValidationParams(metric="miou", gates={"max_accuracy_drop": None, "max_metric_drop": 2.0})
    assert ok.scorer.name == "miou" and ok.scorer.task is Task.DENSE


def test_a_metric_for_other_targets_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="validation.metric.*'miou' scores dense.*classification"):
        resolve("miou").check_task(Task.CLASSIFICATION)
    resolve("top1").check_task(Task.CLASSIFICATION)


def test_small_n_is_planned_for_top1_only():
    gates = GateParams(max_accuracy_drop=None, max_metric_drop=0.5)
    assert sample_size_warnings(780, gates, 0.95, "top1")  # the metric's budget, planned like accuracy
    assert sample_size_warnings(780, gates, 0.95, "miou") == []  # no discordance to plan with
