"""Figures for an artifact, measured through ONNX Runtime: the metric, size, params, MACs, latency.

The metric (``validation.metric``, top-1 accuracy by default) comes with n and a confidence
interval, on the clean test split and, when given, on its perturbed copy
(``kedro_edge.evaluation.robustness``); the per-sample scores are kept for paired comparisons.

Latency is single-stream (batch 1, one query at a time) with a fixed thread count, after a
warm-up, until both a minimum number of runs and a minimum duration are reached (MLPerf's
rule); p50 and p90 are reported. Torch-vs-ONNX agreement tells whether the exported graph
computes what the torch module does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from kedro_edge.compress.quantize import is_quantization_aware, to_float
from kedro_edge.data import Splits
from kedro_edge.evaluation.metrics import Metric, resolve
from kedro_edge.evaluation.records import Agreement, StageFigures
from kedro_edge.models.footprint import footprint
from kedro_edge.models.training import predict
from kedro_edge.runtimes.codec import shipped_size
from kedro_edge.runtimes.graph_teacher import is_graph_only
from kedro_edge.runtimes.onnxruntime import latency_ms, ort_predict, parity, session
from kedro_edge.runtimes.timing import TimingSpec


@dataclass
class StageEvaluation:
    """One stage's figures, and per-sample scores for the paired comparisons."""

    figures: StageFigures
    scores: np.ndarray
    robust_scores: np.ndarray | None


def evaluate_stage(
    onnx_model: onnx.ModelProto,
    module: nn.Module,
    splits: Splits,
    latency: TimingSpec,
    batch_size: int = 256,
    robust_x: np.ndarray | None = None,
    confidence: float = 0.95,
    metric: Metric | None = None,
) -> StageEvaluation:
    """All figures for one stage: ``onnx_model`` is what runs, ``module`` the torch reference.

    ``metric`` (top-1 when not given) is scored on the test split with its n and interval
    (Wilson for 0/1 scores); ``robust_x`` (the perturbed copy of the test images) adds the same
    on it.
    """
    metric = metric or resolve("top1")
    x, y = splits.x("test"), splits.y("test")
    sess = session(onnx_model, latency.threads)  # timed as configured
    predictor = session(onnx_model, 0)  # predictions on every core: the same outputs, sooner
    logits = ort_predict(predictor, x, batch_size)
    scores = metric.scores(logits, y)
    clean = metric.interval(scores, confidence)
    example = torch.from_numpy(x[:1])
    if is_graph_only(module):  # a teacher known only as an ONNX graph: counted on the graph
        fp = module.footprint(example)
    else:
        fp = footprint(to_float(module) if is_quantization_aware(module) else module, example)
    times = latency_ms(sess, x[: min(len(x), 64)], latency)
    robust_scores, robust = None, None
    if robust_x is not None:
        robust_scores = metric.scores(ort_predict(predictor, robust_x, batch_size), y)
        robust = metric.interval(robust_scores, confidence)
    serialized = onnx_model.SerializeToString()
    figures = StageFigures(
        accuracy=clean[0],
        accuracy_ci=clean[1:],
        n=len(scores),
        robust_accuracy=robust[0] if robust else None,
        robust_accuracy_ci=robust[1:] if robust else None,
        size_bytes=len(serialized),
        shipped_bytes=shipped_size(serialized),  # lzma: what a release sends to each device
        params=fp.params,
        macs=fp.macs,
        latency_p50_ms=float(np.percentile(times, 50)),
        latency_p90_ms=float(np.percentile(times, 90)),
        latency_runs=int(len(times)),
        torch_vs_onnx=Agreement(**parity(predict(module, x, batch_size), logits)),
    )
    return StageEvaluation(figures, scores, robust_scores)
