"""Robustness as a curve: every stage at several severities, paired against the reference."""

import copy

import pytest
import torch

from kedro_edge.config import RobustnessParams, ValidationParams
from kedro_edge.data.perturb import at_severity
from kedro_edge.evaluation import plots, severity
from kedro_edge.evaluation.robustness import perturbed_copy
from kedro_edge.evaluation.stage import evaluate_stage
from kedro_edge.runtimes.onnx_export import to_onnx


def test_a_severity_scales_every_perturbation():
    cfg = RobustnessParams(
        perturbations=["shift", "noise", "contrast"], noise_std=0.1, max_shift=2, contrast=0.3
    )
    double, half = at_severity(cfg, 2.0), at_severity(cfg, 0.5)
    assert (double.noise_std, double.max_shift, double.contrast) == pytest.approx((0.2, 4, 0.6))
    assert (half.noise_std, half.max_shift, half.contrast) == pytest.approx((0.05, 1, 0.15))


def test_every_stage_is_drawn_against_severity_and_the_gate_point_is_the_gates_copy(teacher, splits):
    weak = copy.deepcopy(teacher)
    with torch.no_grad():  # a worse "stage": its first layer's weights perturbed
        first = next(p for p in weak.parameters() if p.ndim == 4)
        first.add_(0.3 * first.std() * torch.randn_like(first, generator=torch.Generator().manual_seed(0)))
    cfg = ValidationParams(
        robustness={"severities": [0.5, 1.0, 2.0], "noise_std": 0.15},
        latency={"warmup": 1, "min_runs": 5, "min_seconds": 0},
    )
    models = {"teacher": to_onnx(teacher, splits.input_shape), "weak": to_onnx(weak, splits.input_shape)}
    record = severity.curve(models, splits, cfg)

    assert record["severities"] == [0.0, 0.5, 1.0, 2.0] and record["n"] == len(splits.y("test"))
    teacher_pts, weak_pts = record["stages"]["teacher"], record["stages"]["weak"]
    assert [p["max_shift"] for p in teacher_pts] == [0, 1, 2, 4]
    assert all(p["vs_reference"] is None for p in teacher_pts)
    assert [p["vs_reference"]["n"] for p in weak_pts] == [record["n"]] * 4
    # the input degrades: the teacher loses accuracy from clean to twice the configured severity
    assert teacher_pts[-1]["accuracy"] < teacher_pts[0]["accuracy"] - 0.05
    # severity 1 is exactly the copy the robust gate judges
    gate_copy = perturbed_copy(splits.x("test"), cfg.robustness)
    gated = evaluate_stage(models["teacher"], teacher, splits, cfg.latency, robust_x=gate_copy).figures
    assert teacher_pts[2]["accuracy"] == gated.robust_accuracy
    # the stage evaluation's clean and gate-copy scores stand in for severities 0 and 1 (one
    # validation node predicts them once): the very same record
    evals = {
        name: evaluate_stage(models[name], module, splits, cfg.latency, robust_x=gate_copy)
        for name, module in (("teacher", teacher), ("weak", weak))
    }
    known = {0.0: {n: e.scores for n, e in evals.items()}}
    known[1.0] = {n: e.robust_scores for n, e in evals.items()}
    assert severity.curve(models, splits, cfg, known) == record
    # paired against the reference on the same images: the difference is the two accuracies'
    assert weak_pts[3]["vs_reference"]["diff_points"] == pytest.approx(
        100 * (weak_pts[3]["accuracy"] - teacher_pts[3]["accuracy"])
    )
    fig = plots.robustness_curve_figure(record)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) >= 2


def test_robustness_off_draws_no_curve(splits, teacher):
    cfg = ValidationParams(robustness={"enabled": False})
    record = severity.curve({"teacher": to_onnx(teacher, splits.input_shape)}, splits, cfg)
    assert record["severities"] == [] and record["stages"] == {"teacher": []}
    assert plots.robustness_curve_figure(record).axes[0].texts  # says why it is empty
