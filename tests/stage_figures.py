"""Helpers shared by the evaluation tests: typed stage figures with only the figures a test needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kedro_edge.evaluation.records import Agreement, CompressionMetrics, Finding, StageFigures


def stage_figures(**figures: Any) -> StageFigures:
    """A stage's figures: ``figures`` over plausible ones a test does not look at."""
    plausible = dict(
        accuracy=0.95, accuracy_ci=(0.94, 0.96), n=1000, size_bytes=1000, params=1000, macs=10000,
        latency_p50_ms=1.0, latency_p90_ms=1.2, latency_runs=100, torch_vs_onnx=Agreement(1.0, 0.0),
    )  # fmt: skip
    return StageFigures(**{**plausible, **figures})


def compression_metrics(
    stages: Mapping[str, StageFigures], warnings: list[Finding], confidence: float = 0.95
) -> CompressionMetrics:
    """The record ``evaluate_models`` writes for ``stages`` (the last one final), no gates run."""
    first = next(iter(stages.values()))
    return CompressionMetrics(
        final_stage=list(stages)[-1], test_n=first.n, confidence=confidence, robustness=None,
        stages=dict(stages), latency_threads=1, warnings=warnings, gates=[], passed=True,
    )  # fmt: skip
