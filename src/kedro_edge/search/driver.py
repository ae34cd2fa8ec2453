"""``search``: run (or resume, or extend) the study and return its record."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from kedro_edge import data
from kedro_edge.errors import ConfigError
from kedro_edge.evaluation.metrics import Metric, resolve
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.models import training
from kedro_edge.models.training import TrainParams
from kedro_edge.runtimes import onnx_export
from kedro_edge.search.params import CompressionParams

VAL_INPUTS = 16  # validation images the target feeds to every candidate


def search(
    teacher: nn.Module,
    splits: data.Splits,
    cfg: CompressionParams,
    train: TrainParams,
    fleet: Fleet | None,
    metric: Metric | None = None,
) -> dict[str, Any]:
    """Run (or resume, or extend) the study of ``cfg.search`` and return its record; trials are
    judged by ``metric`` (``validation.metric``, top-1 when not given) against the budget."""
    from kedro_edge.search import record, study, target
    from kedro_edge.search import trial as cand

    metric = metric or resolve("top1")
    metric.check_task(splits.task)
    if metric.name != "top1" and cfg.search.budget.max_metric_drop is None:
        raise ConfigError(
            f"parameter 'compression.search.budget.max_metric_drop': the metric is '{metric.name}': "
            "set the search's budget in its units"
        )

    reference = onnx_export.to_onnx(teacher, splits.input_shape, cfg.export.opset).SerializeToString()
    where = target.resolve(
        cfg.search.target, fleet, reference, splits.x("val")[:VAL_INPUTS], cfg.search.latency
    )
    names = study.stage_names_of(teacher, splits)
    storage = study.storage_of(cfg.search.storage)
    name = study.study_name(cfg, train, target.sha256(reference), names)
    ctx = study.Context(
        teacher=teacher.eval(),
        splits=splits,
        cfg=cfg,
        train=train,
        target=where,
        teacher_val_accuracy=float(np.mean(cand.scores(reference, splits, "val", metric))),
        teacher_logits=training.predict(teacher, splits.x("train")) if cfg.distill.enabled else None,
        storage=storage,
        stage_names=names,
        metric=metric,
    )
    opened = study.open_study(cfg, storage, name)
    summary = study.run(ctx, opened)
    return record.build(ctx, opened, summary, name)
