"""Compression nodes: prune -> quantization-aware -> distill -> teacher.onnx and model.onnx."""

from __future__ import annotations

import numpy as np
import onnx
from torch import nn

from kedro_edge import config, data, export
from kedro_edge.compress import distill, prune, quantize
from kedro_edge.models import build_model


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
            cfg.distill.student, splits.input_shape, splits.num_classes, key="compression.distill.student"
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
