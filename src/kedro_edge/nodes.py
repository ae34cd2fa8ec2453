"""Kedro nodes: pure functions that parse their parameters and call the library.

Each node takes datasets and raw parameter dicts (as Kedro passes them) and returns new
data; all file I/O is in the catalog's datasets (``kedro_edge.io``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from matplotlib.figure import Figure
from torch import nn

from kedro_edge import config, data, evaluate, export, gate, plots
from kedro_edge.compress import distill, prune, quantize
from kedro_edge.errors import DataError
from kedro_edge.models import build_model
from kedro_edge.training import fit

# --- training ------------------------------------------------------------------------------


def split_dataset(raw: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    """Checked, stratified, seeded train/val/test arrays (``x_train``, ``y_train``, ...)."""
    cfg = config.parse(config.DataParams, params, "data")
    if not isinstance(raw, dict) or not {"images", "labels"} <= raw.keys():
        raise DataError("raw_images: expected a dict with 'images' and 'labels'")
    images, labels = data.check_arrays(raw["images"], raw["labels"], "raw_images")
    return data.split_arrays(images, labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.image_size)


def train_teacher(model_input: dict[str, np.ndarray], model: dict, training: dict) -> nn.Module:
    """Train the FP32 teacher with early stopping on validation accuracy."""
    spec = config.parse(config.ModelSpec, model, "model")
    cfg = config.parse(config.TrainParams, training, "training")
    splits = data.Splits(model_input)
    torch.manual_seed(cfg.seed)  # the initial weights are part of the reproducible run
    teacher = build_model(spec, splits.input_shape[1], splits.num_classes)
    fit(
        teacher,
        splits,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        patience=cfg.patience,
        seed=cfg.seed,
        description="train teacher",
    )
    return teacher


# --- compression ---------------------------------------------------------------------------


def prune_teacher(
    teacher: nn.Module, model_input: dict[str, np.ndarray], compression: dict, training: dict
) -> tuple[nn.Module, dict]:
    """Pruned student and a report of MACs/params before, after and per step."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    return prune.prune(teacher, data.Splits(model_input), cfg.prune, train)


def quantize_student(student: nn.Module, model_input: dict[str, np.ndarray], compression: dict) -> nn.Module:
    """The student with fake quantization (calibrated), ready to train under INT8 noise."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    if not cfg.quantize.enabled:
        return student
    calib = data.calibration_samples(data.Splits(model_input), cfg.quantize.calibration_samples)
    return quantize.prepare_qat(student, calib)


def distill_student(
    student: nn.Module,
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    compression: dict,
    training: dict,
) -> nn.Module:
    """Fine-tune the (quantization-aware) student on the teacher's soft targets.

    With ``distill.student`` set, a fresh student of that architecture is trained instead
    of the pruned one. With distillation off the student passes through untouched: the
    INT8 export is then plain post-training quantization.
    """
    cfg = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    if not cfg.distill.enabled:
        return student
    splits = data.Splits(model_input)
    if cfg.distill.student is not None:
        student = build_model(
            cfg.distill.student, splits.input_shape[1], splits.num_classes, key="compression.distill.student"
        )
        if cfg.quantize.enabled:
            calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
            student = quantize.prepare_qat(student, calib)
    distill.distill(student, teacher, splits, cfg.distill, train)
    return student


def export_teacher(
    teacher: nn.Module, model_input: dict[str, np.ndarray], compression: dict
) -> onnx.ModelProto:
    """teacher.onnx: FP32, dynamic batch axis, checked."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    return export.to_onnx(teacher, data.Splits(model_input).input_shape, cfg.export.opset)


def export_model(
    student: nn.Module, model_input: dict[str, np.ndarray], compression: dict
) -> onnx.ModelProto:
    """model.onnx: the student's float weights through ORT's static INT8 QDQ quantizer."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    splits = data.Splits(model_input)
    fp32 = export.to_onnx(student, splits.input_shape, cfg.export.opset)
    if not cfg.quantize.enabled:
        return fp32
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    return export.quantize_int8(fp32, calib, cfg.quantize)


# --- validation ----------------------------------------------------------------------------


def evaluate_models(
    teacher: nn.Module,
    pruned: nn.Module,
    student: nn.Module,
    teacher_onnx: onnx.ModelProto,
    model_onnx: onnx.ModelProto,
    model_input: dict[str, np.ndarray],
    compression: dict,
    validation: dict,
) -> dict[str, Any]:
    """Figures for every stage through ONNX Runtime, and the gate results."""
    comp = config.parse(config.CompressionParams, compression, "compression")
    cfg = config.parse(config.ValidationParams, validation, "validation")
    splits = data.Splits(model_input)
    shape, opset = splits.input_shape, comp.export.opset

    # stage -> (ONNX model that runs, torch module it should agree with)
    stages: dict[str, tuple[onnx.ModelProto, nn.Module]] = {"teacher": (teacher_onnx, teacher)}
    if comp.prune.enabled:
        stages["pruned"] = (export.to_onnx(pruned, shape, opset), pruned)
    if comp.distill.enabled:
        float_student = quantize.to_float(student)
        stages["distilled"] = (export.to_onnx(float_student, shape, opset), float_student)
    if comp.quantize.enabled:
        stages["int8"] = (model_onnx, student)  # the fake-quant module simulates the INT8 graph
    figures = {
        name: evaluate.evaluate_stage(m, mod, splits, cfg.latency, cfg.batch_size)
        for name, (m, mod) in stages.items()
    }
    metrics = {"final_stage": list(stages)[-1], "stages": figures, "latency_threads": cfg.latency.threads}
    metrics["gates"] = [r.to_dict() for r in gate.evaluate_gates(metrics, cfg.gates)]
    metrics["passed"] = all(r["passed"] for r in metrics["gates"])
    return metrics


def plot_compression(metrics: dict) -> Figure:
    return plots.compression_figure(metrics)


def stage_table(metrics: dict) -> list[dict[str, Any]]:
    """One flat record per stage: the data-series form ``dvc plots`` draws and diffs."""
    keys = ("accuracy", "size_bytes", "params", "macs", "latency_p50_ms", "latency_p90_ms")
    return [{"stage": name, **{k: fig[k] for k in keys}} for name, fig in metrics["stages"].items()]


def enforce_gates(metrics: dict, *_written: Any) -> None:
    """Fail the run with one line if a gate refused; runs after the figures are saved."""
    gate.enforce(metrics["gates"])
