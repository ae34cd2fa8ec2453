"""Robustness as a curve: every stage on the perturbed test copy at several severities, paired
against the teacher on the same perturbed images.

One severity says whether a model passed; the curve says how much margin it has left. The gate
stays at the configured severity (1.0); ``validation.robustness.severities`` (½×, 1×, 2× as
shipped) are the points drawn, and severity 0 (the clean test split) anchors each curve.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from kedro_edge.data import Splits
from kedro_edge.data.perturb import at_severity
from kedro_edge.evaluation.params import ValidationParams
from kedro_edge.evaluation.robustness import perturbed_copy
from kedro_edge.runtimes.onnxruntime import ort_predict, session

# severity -> stage -> per-sample scores already computed (the clean and configured-severity
# predictions of the stage evaluation), so the curve does not predict them twice
KnownScores = Mapping[float, Mapping[str, np.ndarray]]


def curve(
    models: Mapping[str, onnx.ModelProto],
    splits: Splits,
    cfg: ValidationParams,
    known: KnownScores | None = None,
) -> dict[str, Any]:
    """Per stage (the first is the reference), per severity: the metric with its interval and the
    paired change against the reference on the same images (``robustness_curve.json``).
    ``known`` gives the scores of whole severities already predicted, e.g. {0.0: clean, 1.0: robust}."""
    rob, metric = cfg.robustness, cfg.scorer
    severities = sorted({0.0, *rob.severities}) if rob.enabled else []
    x, y = splits.x("test"), splits.y("test")
    sessions = {name: session(m, 0) for name, m in models.items()}  # not timed: every core
    reference = next(iter(models))
    points: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for s in severities:
        scores = dict((known or {}).get(s, {}))
        if set(scores) != set(models):
            xs = x if s == 0 else perturbed_copy(x, rob, splits.preprocessing, severity=s)
            scores = {
                name: metric.scores(ort_predict(sess, xs, cfg.batch_size), y)
                for name, sess in sessions.items()
            }
        scaled = at_severity(rob, s)
        for name, got in scores.items():
            mean, low, high = metric.interval(got, cfg.confidence)
            vs = None
            if name != reference:
                vs = metric.paired(scores[reference], got, cfg.confidence, cfg.bootstrap_resamples)
            points[name].append(
                {
                    "severity": s,
                    "noise_std": scaled.noise_std,
                    "max_shift": scaled.max_shift,
                    "contrast": scaled.contrast,
                    "accuracy": mean,
                    "accuracy_ci": [low, high],
                    "vs_reference": vs.to_dict() if vs else None,
                }
            )
    return {
        "reference": reference,
        "metric": metric.name,
        "scale": metric.scale,
        "n": int(len(y)),
        "confidence": cfg.confidence,
        "gate_severity": 1.0,
        "perturbations": rob.perturbations,
        "severities": severities,
        "stages": points,
    }
