import numpy as np
import pytest

from kedro_edge.config import GateParams
from kedro_edge.errors import GateError
from kedro_edge.evaluation.gates import enforce, evaluate_gates, sample_size_warnings
from kedro_edge.evaluation.records import Agreement, StageComparison
from kedro_edge.evaluation.statistics import paired
from tests.stage_figures import stage_figures

N = 5000


def _comparison(only_teacher_right: int, only_model_right: int = 0):
    teacher = np.ones(N, bool)
    model = teacher.copy()
    model[:only_teacher_right] = False
    teacher[N - only_model_right :] = False
    return paired(teacher, model)


def _metrics(lost=25, robust_lost=50, teacher_size=1000, final_size=100, agree=1.0, gained=0):
    """(stages, final stage): the teacher and the final stage compared with it."""
    vs_teacher = StageComparison(clean=_comparison(lost, gained), robust=_comparison(robust_lost))
    stages = {
        "teacher": stage_figures(size_bytes=teacher_size),
        "int8": stage_figures(
            size_bytes=final_size, torch_vs_onnx=Agreement(agree, 0.0), vs_teacher=vs_teacher
        ),
    }
    return stages, "int8"


def test_passing_gates_record_their_figures():
    results = evaluate_gates(*_metrics(), GateParams(max_accuracy_drop=1.0, min_size_reduction=8))
    by = {r.gate: r for r in results}
    assert set(by) == {"max_accuracy_drop", "max_robust_accuracy_drop", "min_size_reduction", "min_agreement"}
    assert by["max_accuracy_drop"].passed
    assert by["max_accuracy_drop"].value == pytest.approx(0.5 + 0.2, abs=0.05)  # upper bound of a 0.5 drop
    assert by["min_size_reduction"].passed and by["min_size_reduction"].value == 10
    enforce(results)  # no error


def test_the_accuracy_gate_names_the_figure_the_interval_and_n():
    result = evaluate_gates(*_metrics(lost=75), GateParams(max_accuracy_drop=1.0))[0]
    assert not result.passed
    assert result.reason.startswith("accuracy drop 1.50 points, paired 95% CI [1.1")
    assert "McNemar p=" in result.reason and "n=5000" in result.reason
    assert result.reason.endswith("> 1.00")


def test_the_upper_bound_refuses_a_drop_the_point_estimate_would_pass():
    # 0.9 points lost: within 1.0 as a point, but the data can't show the drop is below 1.0
    metrics = _metrics(lost=45)
    by_bound = evaluate_gates(*metrics, GateParams(max_accuracy_drop=1.0))[0]
    by_point = evaluate_gates(*metrics, GateParams(max_accuracy_drop=1.0, accuracy_decision="point"))[0]
    assert not by_bound.passed and by_point.passed
    assert by_point.value == pytest.approx(0.9)


def test_gains_and_losses_cancel_in_the_paired_figure():
    result = evaluate_gates(*_metrics(lost=60, gained=40), GateParams(accuracy_decision="point"))[0]
    assert result.value == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("metrics", "gate"),
    [
        (_metrics(lost=100), "max_accuracy_drop"),
        (_metrics(robust_lost=150), "max_robust_accuracy_drop"),
        (_metrics(final_size=500), "min_size_reduction"),
        (_metrics(agree=0.9), "min_agreement"),
    ],
)
def test_a_violated_gate_refuses_with_one_line(metrics, gate):
    results = evaluate_gates(*metrics, GateParams())
    assert [r.gate for r in results if not r.passed] == [gate]
    with pytest.raises(GateError, match=f"gate '{gate}' refused model.onnx") as err:
        enforce(results)
    assert "\n" not in str(err.value)


def test_null_switches_a_gate_off():
    params = GateParams(
        max_accuracy_drop=None, max_robust_accuracy_drop=None, min_size_reduction=None, min_agreement=None
    )
    assert evaluate_gates(*_metrics(lost=4000), params) == []


def test_a_test_split_too_small_for_the_budget_is_said_before_training():
    # 780 images, 3% discordance: +-1.22 points, so a 0.5-point budget can never pass
    lines = sample_size_warnings(780, GateParams(max_accuracy_drop=0.5, max_robust_accuracy_drop=2.0), 0.95)
    assert len(lines) == 1
    assert lines[0].startswith("n = 780 test images give ±1.22 points")
    assert "0.5-point validation.gates.max_accuracy_drop budget needs about 4,610" in lines[0]
    # the default split (5,200 images) fits the shipped 0.5-point budget; point decisions never warn
    assert sample_size_warnings(5200, GateParams(max_accuracy_drop=0.5), 0.95) == []
    assert sample_size_warnings(780, GateParams(max_accuracy_drop=0.5, accuracy_decision="point"), 0.95) == []


def test_a_refusal_by_a_too_wide_interval_says_how_many_images_would_do():
    # 1,000 images with 40 discordant and no net loss: the interval alone exceeds a 0.5 budget
    teacher = np.ones(1000, bool)
    model = teacher.copy()
    model[:20] = False
    teacher[-20:] = False
    vs_teacher = StageComparison(clean=paired(teacher, model), robust=None)
    stages = {
        "teacher": stage_figures(size_bytes=1000),
        "int8": stage_figures(size_bytes=100, torch_vs_onnx=Agreement(1.0, 0.0), vs_teacher=vs_teacher),
    }
    result = evaluate_gates(stages, "int8", GateParams(max_accuracy_drop=0.5))[0]
    assert not result.passed
    assert "it needs about 6,147 images" in result.reason
