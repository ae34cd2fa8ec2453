"""Validation nodes: every stage through ONNX Runtime, the plot, the gates."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from matplotlib.figure import Figure
from torch import nn

from kedro_edge import config, data
from kedro_edge.compress import quantize, registry
from kedro_edge.evaluation import gates, plots, robustness, severity
from kedro_edge.evaluation import report as compare_stages
from kedro_edge.evaluation import stage as stage_eval
from kedro_edge.evaluation.records import CompressionMetrics
from kedro_edge.io.fleet import ModelFile
from kedro_edge.models.sources import TeacherSource
from kedro_edge.runtimes import onnx_export

log = logging.getLogger(__name__)


def evaluate_models(
    teacher: nn.Module,
    teacher_onnx: onnx.ModelProto,
    model_onnx: onnx.ModelProto,
    model_input: dict[str, np.ndarray],
    compression: dict,
    validation: dict,
    *modules: nn.Module,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figures for every stage through ONNX Runtime and the gate results (a ``CompressionMetrics``
    as the JSON ``compression_metrics`` writes), and every stage at each of
    ``validation.robustness.severities`` (``robustness_curve.json``, ``severity.curve``): one node,
    so the clean and configured-severity predictions serve both.

    ``modules`` are the registered techniques' outputs in recipe order (``compress.registry``);
    the stage table has the teacher, then a row per enabled technique that has one.
    """
    comp = config.parse(config.CompressionParams, compression, "compression")
    cfg = config.parse(config.ValidationParams, validation, "validation")
    splits = data.Splits(model_input)
    metric = cfg.scorer
    metric.check_task(splits.task)
    stages = _stage_models(teacher, teacher_onnx, model_onnx, comp, splits, modules)
    robust_x = (
        robustness.perturbed_copy(splits.x("test"), cfg.robustness, splits.preprocessing)
        if cfg.robustness.enabled
        else None
    )
    evaluations = {
        name: stage_eval.evaluate_stage(
            m, mod, splits, cfg.latency, cfg.batch_size, robust_x, cfg.confidence, metric
        )
        for name, (m, mod) in stages.items()
    }
    figures = compare_stages.compare(evaluations, cfg)
    final_stage = list(stages)[-1]
    warnings = compare_stages.regressions(figures, cfg)
    for finding in warnings:
        log.warning(finding.message)
    results = gates.evaluate_gates(figures, final_stage, cfg.gates, metric.name)
    known = {0.0: {name: e.scores for name, e in evaluations.items()}}
    if robust_x is not None:
        known[1.0] = {name: e.robust_scores for name, e in evaluations.items()}
    curve = severity.curve({name: m for name, (m, _) in stages.items()}, splits, cfg, known)
    record = CompressionMetrics(
        final_stage=final_stage,
        test_n=len(splits.y("test")),
        confidence=cfg.confidence,
        robustness=cfg.robustness if cfg.robustness.enabled else None,
        stages=figures,
        latency_threads=cfg.latency.threads,
        warnings=warnings,
        gates=results,
        passed=all(r.passed for r in results),
        metric=metric.info(),
    ).to_json()
    return record, curve


def _stage_models(
    teacher: nn.Module,
    teacher_onnx: onnx.ModelProto,
    model_onnx: onnx.ModelProto,
    comp: config.CompressionParams,
    splits: data.Splits,
    modules: tuple[nn.Module, ...],
) -> dict[str, tuple[onnx.ModelProto, nn.Module]]:
    """Stage -> (the ONNX model that runs, the torch module it should agree with), in table order."""
    outputs = dict(zip((t.name for t in registry.techniques()), modules, strict=True))
    stages: dict[str, tuple[onnx.ModelProto, nn.Module]] = {registry.REFERENCE: (teacher_onnx, teacher)}
    for technique in registry.stages(comp):
        if technique.row == "int8":  # the fake-quant module simulates the INT8 graph
            stages[technique.stage] = (model_onnx, modules[-1])
        else:
            module = quantize.float_module(outputs[technique.name])
            stages[technique.stage] = (
                onnx_export.to_onnx(module, splits.input_shape, comp.export.opset),
                module,
            )
    return stages


def plot_robustness_curve(record: dict) -> Figure:
    return plots.robustness_curve_figure(record)


def plot_compression(metrics: dict) -> Figure:
    m = CompressionMetrics.from_json(metrics)
    return plots.compression_figure(m.stages, m.test_n, m.confidence, m.metric)


def stage_table(metrics: dict) -> list[dict[str, Any]]:
    """One flat record per stage: the data-series form ``dvc plots`` draws and diffs."""
    keys = ("accuracy", "robust_accuracy", "size_bytes", "shipped_bytes", "params", "macs", "latency_p50_ms",
            "latency_p90_ms")  # fmt: skip
    rows = []
    for name, fig in CompressionMetrics.from_json(metrics).stages.items():
        figures = {k: getattr(fig, k) for k in keys}
        rows.append({"stage": name, **{k: v for k, v in figures.items() if v is not None}})
    return rows


def enforce_gates(
    metrics: dict, model_file: ModelFile, teacher_source: dict[str, Any], *_written: Any
) -> dict[str, Any]:
    """Fail the run with one line if a gate refused; else the record that this model passed.

    Runs after the figures are saved. The record names the model by sha256, so deployment
    can refuse a model.onnx that is not the one validated, and the teacher it came from
    (trained here, or the user's file by sha256).
    """
    m = CompressionMetrics.from_json(metrics)
    gates.enforce(m.gates)
    teacher = TeacherSource.model_validate(teacher_source).to_json()
    return {"passed": True, "model": {**model_file.version, "teacher": teacher}, "figures": m.final.to_json(),
            "gates": [g.to_dict() for g in m.gates]}  # fmt: skip
