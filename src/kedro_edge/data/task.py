"""What a model's outputs are for each kind of target: its training loss, its distillation loss,
and its per-sample scores.

The data decides the task (``task_of``): 1-D class ids are classification (outputs (N, C)),
(N, H, W) class-id masks are dense per-pixel classification (outputs (N, C, H, W)). Regression
(float targets) and multi-label (0/1 rows) have their losses and scores here too, for models
trained elsewhere. ``validation.metric`` (``kedro_edge.evaluation.metrics``) builds on the scores.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F


class Task(str, Enum):
    CLASSIFICATION = "classification"
    DENSE = "dense"  # per-pixel classes: segmentation
    REGRESSION = "regression"
    MULTILABEL = "multilabel"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The hard-target loss: cross-entropy (per pixel for dense), MSE, or binary cross-entropy."""
        if self in (Task.CLASSIFICATION, Task.DENSE):
            return F.cross_entropy(outputs, targets.long())
        if self is Task.REGRESSION:
            return F.mse_loss(outputs.reshape(targets.shape), targets.float())
        return F.binary_cross_entropy_with_logits(outputs, targets.float())

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """Distillation's soft term: KL of the tempered class distributions (per sample, or per
        pixel for dense outputs, averaged), times T^2; MSE to the teacher's outputs for regression;
        binary cross-entropy to its tempered probabilities for multi-label."""
        if self in (Task.CLASSIFICATION, Task.DENSE):
            log_t = F.log_softmax(teacher / temperature, dim=1)
            log_s = F.log_softmax(student / temperature, dim=1)
            return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(1).mean()
        if self is Task.REGRESSION:
            return F.mse_loss(student, teacher)
        target = torch.sigmoid(teacher / temperature)
        return temperature**2 * F.binary_cross_entropy_with_logits(student / temperature, target)

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The validation score early stopping keeps the best of (higher is better): top-1
        accuracy, mean IoU, negative MSE or F1."""
        return float({
            Task.CLASSIFICATION: top1, Task.DENSE: miou, Task.REGRESSION: lambda o, t: -mse(o, t),
            Task.MULTILABEL: multilabel_f1(0.0),
        }[self](outputs, targets).mean())  # fmt: skip


def task_of(targets: np.ndarray) -> Task:
    """The task the targets imply when the model input does not say (``Splits.task``)."""
    if targets.dtype.kind == "f":
        return Task.REGRESSION
    return Task.DENSE if targets.ndim == 3 else Task.CLASSIFICATION


# --- per-sample scores: (outputs of N samples, their N targets) -> N floats ---------------------


def top1(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return (outputs.argmax(1) == targets).astype(np.float64)


def topk(k: int):
    def score(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        best = np.argpartition(-outputs, min(k, outputs.shape[1]) - 1, axis=1)[:, :k]
        return (best == targets[:, None]).any(1).astype(np.float64)

    return score


def _per_sample(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).mean(1)


def mae(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return _per_sample(np.abs(outputs.reshape(targets.shape) - targets))


def mse(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return _per_sample((outputs.reshape(targets.shape) - targets) ** 2)


def multilabel_f1(threshold: float):
    def score(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        pred, true = outputs > threshold, targets.astype(bool)
        tp = (pred & true).sum(1)
        denom = pred.sum(1) + true.sum(1)
        return np.where(denom == 0, 1.0, 2 * tp / np.maximum(denom, 1))  # nothing to find, nothing found: 1

    return score


def miou(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A sample's IoU averaged over the classes present in its prediction or its target."""
    classes = outputs.shape[1]
    pred = outputs.argmax(1).reshape(len(outputs), -1)
    true = targets.reshape(len(targets), -1)
    inter = np.zeros((len(pred), classes))
    union = np.zeros((len(pred), classes))
    for c in range(classes):
        p, t = pred == c, true == c
        inter[:, c] = (p & t).sum(1)
        union[:, c] = (p | t).sum(1)
    present = union > 0
    return (np.where(present, inter / np.maximum(union, 1), 0).sum(1)) / np.maximum(present.sum(1), 1)
