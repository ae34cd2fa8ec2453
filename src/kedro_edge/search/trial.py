"""One trial's model: built from the teacher by its settings, then fine-tuned, clustered, made INT8.

Building is cheap (an SVD, a one-shot prune, an INT8 export) and fixes the graph, which is all
that batch-1 latency depends on: a candidate is timed on the target right after it is built,
before any training, so a trial that cannot beat the fastest candidate already within budget
ends without a fine-tune. Training is the expensive part: a short distillation fine-tune (the
recipe's loss, on a cosine schedule), with hopeless trials stopped after its first epoch.
Accuracy is always the INT8 graph's, through ONNX Runtime, on the validation split.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from kedro_edge import data
from kedro_edge.compress import cluster, distill, lowrank, prune, ptq
from kedro_edge.compress.mixed_precision import layer_names
from kedro_edge.evaluation.metrics import Metric, resolve
from kedro_edge.models.footprint import footprint
from kedro_edge.models.training import TrainParams, accuracy, fit
from kedro_edge.runtimes import onnx_export
from kedro_edge.runtimes.codec import shipped_size
from kedro_edge.runtimes.onnxruntime import ort_predict, session
from kedro_edge.search.params import CompressionParams
from kedro_edge.search.space import Settings, stages, to_recipe


@dataclass
class TrialModel:
    settings: Settings
    module: nn.Module  # float, pruned; trained in place by ``finetune``
    recipe: CompressionParams  # what the pipeline runs to rebuild this candidate in full
    onnx: bytes  # the INT8 graph of the current weights
    macs: int
    params: int
    notes: dict = field(default_factory=dict)


def _int8(
    model: nn.Module, splits: data.Splits, cfg: CompressionParams, settings: Settings
) -> tuple[bytes, list]:
    """The INT8 QDQ graph of ``model``, its first and/or last weighted layer float as ``settings`` say."""
    fp32 = onnx_export.to_onnx(model, splits.input_shape, cfg.export.opset)
    layers = layer_names(fp32)
    exclude = ([layers[0]] if settings.exclude_first else []) + (
        [layers[-1]] if settings.exclude_last else []
    )
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    chosen = cfg.quantize.model_copy(update={"exclude": exclude})
    return ptq.quantize_int8(fp32, calib, chosen).SerializeToString(), exclude


def build(teacher: nn.Module, splits: data.Splits, settings: Settings, cfg: CompressionParams) -> TrialModel:
    """Low-rank (if set) and one-shot structured pruning of ``teacher``; no training yet."""
    example = splits.example()
    model = copy.deepcopy(teacher).eval()
    if settings.lowrank_energy is not None:
        lr_cfg = cfg.lowrank.model_copy(
            update={"enabled": True, "energy": settings.lowrank_energy, "target_macs": None}
        )
        model, _ = lowrank.factorise(model, example, lr_cfg)
    found = stages(model, example)
    recipe = to_recipe(settings, cfg, found, exclude=[])
    prune.one_shot(model, example, recipe.prune)
    graph, exclude = _int8(model, splits, cfg, settings)
    recipe = recipe.model_copy(update={"quantize": recipe.quantize.model_copy(update={"exclude": exclude})})
    fp = footprint(model, example)
    return TrialModel(settings, model.eval(), recipe, graph, fp.macs, fp.params)


def scores(graph: bytes, splits: data.Splits, split: str = "val", metric: Metric | None = None) -> np.ndarray:
    """Per-sample scores of an ONNX graph (INT8 candidate or FP32 reference) on ``split`` by
    ``metric`` (``validation.metric``; top-1 correctness when not given)."""
    metric = metric or resolve("top1")
    return metric.scores(ort_predict(session(graph), splits.x(split)), splits.y(split))


def finetune(
    candidate: TrialModel,
    splits: data.Splits,
    cfg: CompressionParams,
    train: TrainParams,
    epochs: int,
    give_up_below: float,
    teacher_logits: np.ndarray | None,
) -> bool:
    """Train ``candidate.module`` for ``epochs``, one at a time on a cosine schedule; False when,
    after the first, its float validation accuracy is below ``give_up_below`` (the trial is hopeless).

    The loss is the recipe's: distillation against ``teacher_logits`` (the training split's, computed
    once per search) with ``compression.distill``'s temperature and alpha, or the labels alone when the
    recipe does not distil. A trial's accuracy then predicts what the full recipe reaches.
    """
    model = candidate.module
    kd = cfg.distill.enabled and teacher_logits is not None
    for epoch in range(epochs):
        fit(
            model,
            splits,
            epochs=1,
            batch_size=train.batch_size,
            lr=(cfg.distill.lr if kd else cfg.prune.lr) * 0.5 * (1 + math.cos(math.pi * epoch / epochs)),
            weight_decay=train.weight_decay,
            seed=train.seed + epoch,
            description=f"trial fine-tune {epoch + 1}/{epochs}",
            precision=train.precision,
            **(
                {"loss_fn": distill.loss_of(cfg.distill, splits.task), "targets": teacher_logits}
                if kd
                else {}
            ),
        )
        if epoch == 0:
            candidate.notes["val_accuracy_after_1_epoch"] = accuracy(model, splits.x("val"), splits.y("val"))
            if candidate.notes["val_accuracy_after_1_epoch"] < give_up_below:
                return False
    return True


def finish(
    candidate: TrialModel, splits: data.Splits, cfg: CompressionParams, train: TrainParams, clustered: bool
) -> None:
    """Re-export the INT8 graph of the trained weights; ``clustered`` (the space searches k): cluster
    first, centroids fine-tuned as the recipe does. Unsearched clustering is left to the full recipe:
    it changes the bytes shipped, not latency, and untrained it would cost a trial points the recipe
    gets back."""
    k = candidate.settings.cluster_k
    if clustered and k:
        shared = cfg.cluster.model_copy(update={"enabled": True, "k": k})
        candidate.module, _ = cluster.cluster(candidate.module, splits, shared, train)
    candidate.onnx, _ = _int8(candidate.module.eval(), splits, cfg, candidate.settings)


def sizes(graph: bytes) -> dict[str, int]:
    return {"onnx_bytes": len(graph), "shipped_bytes": shipped_size(graph)}
