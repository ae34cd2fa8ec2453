"""The task's metric: one score per sample, so every interval and paired comparison can use it.

``validation.metric`` names a built-in or an import path. A metric maps a model's outputs and
the targets of the same samples to a score per sample; its mean is the figure reported, its
direction says whether higher is better, and 0/1 scores (top-1, top-k) keep the exact McNemar
test of the paired comparison; any other score gets the paired bootstrap's interval and p-value
(``kedro_edge.evaluation.statistics``). The score functions live with the tasks they score
(``kedro_edge.data.task``).

Built-ins:
- ``top1``: 1 where the arg-max class is the label (classification; the default);
- ``topk``: 1 where the label is among the ``k`` highest outputs;
- ``mae`` / ``mse``: absolute / squared error, averaged over a sample's outputs (regression; lower is better);
- ``multilabel_f1``: the F1 of the labels whose outputs (logits) exceed ``threshold``, against
  the 0/1 targets;
- ``miou``: a sample's intersection-over-union averaged over the classes present in its
  prediction or its target (dense outputs (N, C, H, W), targets (N, H, W) class ids).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from kedro_edge.data.task import Task, mae, miou, mse, multilabel_f1, top1, topk
from kedro_edge.errors import ConfigError
from kedro_edge.evaluation import statistics
from kedro_edge.evaluation.records import MetricInfo
from kedro_edge.models.factory import import_object
from kedro_edge.schema import Strict

KEY = "validation.metric"

# (outputs of N samples, their N targets) -> N scores
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A per-sample score, its direction, and whether its scores are 0/1."""

    name: str
    score: ScoreFn
    higher_is_better: bool = True
    binary: bool = False
    # reported figures are the mean times this: 100 turns a share into percent (points)
    scale: float = 1.0
    task: Task | None = None  # the targets it scores (None: an import path, any)

    @property
    def unit(self) -> str:
        """Of differences: percentage points for shares, else the metric's own units."""
        return self.info().unit

    def info(self) -> MetricInfo:
        """What a record keeps of this metric (``compression_metrics.json``'s ``metric``)."""
        return MetricInfo.named(self.name, self.scale, self.higher_is_better)

    def check_task(self, task: Task) -> None:
        """A ``ConfigError`` naming the key when the metric cannot score the data's targets."""
        if self.task is not None and self.task is not task:
            raise ConfigError(
                f"parameter '{KEY}': '{self.name}' scores {self.task.value} outputs, but the model input's "
                f"targets are {task.value} (e.g. miou for masks, top1 for class ids)"
            )

    def interval(self, scores: np.ndarray, confidence: float) -> tuple[float, float, float]:
        """(mean, low, high): Wilson for 0/1 scores, else a t interval."""
        return statistics.mean_interval(scores, self.binary, confidence)

    def paired(
        self, reference: np.ndarray, candidate: np.ndarray, confidence: float, resamples: int = 20000
    ) -> statistics.PairedComparison:
        """Candidate vs reference on the same samples, in this metric's units and direction."""
        return statistics.paired_scores(
            reference, candidate, binary=self.binary, higher_is_better=self.higher_is_better,
            scale=self.scale, unit=self.unit, confidence=confidence, resamples=resamples,
        )  # fmt: skip

    def scores(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Per-sample scores as float64, or a one-line ``ConfigError`` naming the metric."""
        out = np.asarray(self.score(outputs, targets), dtype=np.float64)
        if out.shape != (len(targets),):
            raise ConfigError(
                f"parameter '{KEY}': '{self.name}' returned shape {out.shape} for {len(targets)} samples "
                "(one score per sample expected)"
            )
        if not np.isfinite(out).all():
            raise ConfigError(f"parameter '{KEY}': '{self.name}' returned NaN or infinite scores")
        return out


class MetricParams(Strict):
    """``validation.metric`` as a mapping: a built-in or an import path, and its settings."""

    name: str = "top1"  # top1 | topk | mae | mse | multilabel_f1 | miou | package.module.function
    k: int = Field(5, ge=1)  # topk
    threshold: float = 0.0  # multilabel_f1: on the outputs (logits: 0 is probability 0.5)
    higher_is_better: bool | None = None  # an import path: its direction (built-ins know theirs)
    binary: bool = False  # an import path: its scores are 0/1 (the exact McNemar test applies)
    scale: float = Field(1.0, gt=0)  # an import path: reported figure = mean score x scale
    task: Task | None = None  # an import path: the targets it scores (checked against the data)


def resolve(params: MetricParams | str) -> Metric:
    """The ``Metric`` that ``validation.metric`` names; a ``ConfigError`` naming the key otherwise."""
    cfg = MetricParams(name=params) if isinstance(params, str) else params
    builtin: dict[str, Metric] = {
        "top1": Metric("top1", top1, binary=True, scale=100.0, task=Task.CLASSIFICATION),
        "topk": Metric(f"top{cfg.k}", topk(cfg.k), binary=True, scale=100.0, task=Task.CLASSIFICATION),
        "mae": Metric("mae", mae, higher_is_better=False, task=Task.REGRESSION),
        "mse": Metric("mse", mse, higher_is_better=False, task=Task.REGRESSION),
        "multilabel_f1": Metric(
            "multilabel_f1", multilabel_f1(cfg.threshold), scale=100.0, task=Task.MULTILABEL
        ),
        "miou": Metric("miou", miou, scale=100.0, task=Task.DENSE),
    }
    if cfg.name in builtin:
        return builtin[cfg.name]
    if "." not in cfg.name:
        raise ConfigError(
            f"parameter '{KEY}': unknown metric '{cfg.name}' (built-ins: {', '.join(builtin)}; "
            "or an import path package.module.function)"
        )
    if cfg.higher_is_better is None:
        raise ConfigError(
            f"parameter '{KEY}.higher_is_better': say the direction of '{cfg.name}' (true or false)"
        )
    fn = import_object(cfg.name, f"{KEY}.name")
    if not callable(fn):
        raise ConfigError(f"parameter '{KEY}.name': '{cfg.name}' is not a function")
    return Metric(cfg.name, fn, cfg.higher_is_better, cfg.binary, cfg.scale, cfg.task)
