"""Training nodes: raw images or feature vectors -> checked, seeded splits -> FP32 teacher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kedro_edge import config, data
from kedro_edge.data import preprocessing, store
from kedro_edge.errors import ConfigError, DataError
from kedro_edge.evaluation import gates, statistics
from kedro_edge.models import build_model, sources
from kedro_edge.models.training import fit
from kedro_edge.runtimes import graph_teacher

log = logging.getLogger(__name__)


def split_dataset(raw: dict[str, np.ndarray], params: dict) -> dict[str, Any]:
    """Checked, stratified, seeded splits: for images, the pixel store and index lists over it.

    ``masks`` (per-pixel class ids, beside ``images``) make the task dense: they are the targets,
    resized by nearest neighbour. Images stay pixels (``uint8``, or float32 when given as floats), resized to
    ``data.image_size`` chunk by chunk as ``model_input`` writes them; ``data.preprocessing`` is
    recorded (``preprocessing``) and applied batch by batch when they are read. Feature vectors
    are split in memory and standardised with the training split's mean and std, which are
    returned too (``feature_mean``, ``feature_std``).
    """
    cfg = config.parse(config.DataParams, params, "data")
    kind = next((k for k in ("images", "features") if isinstance(raw, dict) and k in raw), None)
    if kind is None or "labels" not in raw:
        raise DataError("raw_images: expected a dict with 'images' or 'features', and 'labels'")
    if kind == "features":
        x, labels = data.check_features(raw["features"], raw["labels"], "raw_images")
        split = data.split_arrays(x, labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, None)
        return data.standardise(split)
    images, labels = data.check_images(raw["images"], raw["labels"], "raw_images")
    out: dict[str, Any] = {
        data.PIXELS: store.resized(images, cfg.image_size),
        data.PIXEL_SCALE: np.float32(1 / 255 if images.dtype == np.uint8 else 1.0),
    }
    targets = labels  # per-pixel masks (dense), when given: split stratified by the labels still
    if "masks" in raw:
        targets = data.resized_masks(data.check_masks(raw["masks"], images, "raw_images"), cfg.image_size)
        out[data.TASK] = np.array(data.Task.DENSE.value)
    for name, part in data.split_indices(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed).items():
        out[f"index_{name}"], out[f"y_{name}"] = part, targets[part]
    if cfg.preprocessing is not None:
        contract = cfg.preprocessing
        first = np.asarray(out[data.PIXELS][:1], dtype=np.float32) * out[data.PIXEL_SCALE]
        preprocessing.prepare(first, contract)  # a contract that does not fit fails here, naming its key
        out[preprocessing.ARRAY_KEY] = np.array(contract.to_json())
    return out


def check_sample_size(model_input: dict[str, np.ndarray], validation: dict) -> dict[str, Any]:
    """Whether the test split is large enough for the accuracy gates' budgets, said before
    training (a warning per gate, and the figures as JSON): a budget narrower than the paired
    interval of n images is one no model can pass."""
    cfg = config.parse(config.ValidationParams, validation, "validation")
    n = len(data.Splits(model_input).y("test"))
    warnings = gates.sample_size_warnings(n, cfg.gates, cfg.confidence, cfg.scorer.name)
    for line in warnings:
        log.warning(line)
    return {
        "test_n": n,
        "planning_discordance": cfg.gates.planning_discordance,
        "confidence": cfg.confidence,
        "half_width_points": round(
            statistics.paired_half_width(n, cfg.gates.planning_discordance, cfg.confidence), 3
        ),
        "warnings": warnings,
    }


def train_teacher(
    model_input: dict[str, np.ndarray], model: dict, training: dict
) -> tuple[nn.Module, dict[str, Any]]:
    """The FP32 teacher and where it came from (``TeacherSource`` as JSON).

    With ``model.checkpoint`` the user's trained model is loaded and evaluated as it is
    (fine-tuned for ``model.finetune_epochs`` if set); else it is trained from ``class_path``
    with early stopping on validation accuracy.
    """
    spec = config.parse(config.TeacherSpec, model, "model")
    cfg = config.parse(config.TrainParams, training, "training")
    splits = data.Splits(model_input)
    torch.manual_seed(cfg.seed)  # the initial weights are part of the reproducible run
    if spec.source is not None:
        teacher, source = given_teacher(spec, splits)
        epochs, description = spec.finetune_epochs, "fine-tune teacher"
    else:
        teacher = build_model(spec, splits.input_shape, splits.num_classes)
        source = sources.TeacherSource(kind=sources.SourceKind.TRAINED)
        epochs, description = cfg.epochs, "train teacher"
    if epochs:
        fit(
            teacher,
            splits,
            epochs=epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            patience=cfg.patience,
            seed=cfg.seed,
            description=description,
            precision=cfg.precision,
            schedule=cfg.schedule,
        )
    return teacher.eval(), source.to_json()


def given_teacher(spec: config.TeacherSpec, splits: data.Splits) -> tuple[nn.Module, sources.TeacherSource]:
    """The user's teacher: a module from ``model.checkpoint``, or a graph-only teacher from an ONNX,
    TorchScript or ``torch.export`` file."""
    key, name = spec.source
    if splits.preprocessing is None and splits.x("train").ndim == 4:
        raise ConfigError(preprocessing.NEEDED_BY_GIVEN_TEACHER)
    path = Path(name)
    if key == "model.onnx":
        if not path.is_file():
            raise ConfigError(f"parameter '{key}': {path} does not exist")
        kind = sources.SourceKind.ONNX
    else:
        kind = sources.detect(path, key)
    if kind.graph_only:
        if spec.finetune_epochs:
            raise ConfigError(
                f"parameter 'model.finetune_epochs': {path} is a graph ({kind.value}), it cannot be tuned"
            )
        teacher: nn.Module = graph_teacher.load(path, kind, splits.input_shape, key)
    else:
        teacher, kind = sources.load_checkpoint(spec, path, splits.input_shape, splits.num_classes, key)
    return teacher, sources.TeacherSource(kind=kind, path=name, sha256=sources.sha256_of(path))
