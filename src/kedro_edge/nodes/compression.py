"""Compression nodes: low-rank -> prune -> quantization-aware -> distill -> cluster -> teacher.onnx
and model.onnx (INT8, with the layers mixed precision keeps in float)."""

from __future__ import annotations

import numpy as np
import onnx
from torch import nn

from kedro_edge import compress, config, data
from kedro_edge.compress import distill, mixed_precision, ptq, quantize
from kedro_edge.models import build_model
from kedro_edge.runtimes import onnx_export


def _technique(
    name: str, module: nn.Module, model_input: dict[str, np.ndarray], compression: dict, training: dict
) -> tuple[nn.Module, dict]:
    cfg = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    return compress.apply(name, module, data.Splits(model_input), cfg, train)


def factorise_teacher(
    teacher: nn.Module, model_input: dict[str, np.ndarray], compression: dict, training: dict
) -> tuple[nn.Module, dict]:
    """Low-rank factorised teacher (fine-tuned) and its report: ranks, MACs before and after."""
    return _technique("lowrank", teacher, model_input, compression, training)


def prune_teacher(
    teacher: nn.Module, model_input: dict[str, np.ndarray], compression: dict, training: dict
) -> tuple[nn.Module, dict]:
    """Pruned student and a report of MACs/params before, after and per step."""
    return _technique("prune", teacher, model_input, compression, training)


def cluster_student(
    student: nn.Module, model_input: dict[str, np.ndarray], compression: dict, training: dict
) -> tuple[nn.Module, dict]:
    """The student with each layer's weights shared among ``k`` values (fine-tuned), and a report."""
    return _technique("cluster", student, model_input, compression, training)


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
    return onnx_export.to_onnx(teacher, data.Splits(model_input).input_shape, cfg.export.opset)


def export_model(
    student: nn.Module, model_input: dict[str, np.ndarray], compression: dict
) -> tuple[onnx.ModelProto, dict]:
    """model.onnx: the student's float weights through ORT's static INT8 QDQ quantizer, the layers
    of ``quantize.exclude`` (or those ``auto`` finds on the validation split) left in float."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    splits = data.Splits(model_input)
    fp32 = onnx_export.to_onnx(quantize.float_module(student), splits.input_shape, cfg.export.opset)
    if not cfg.quantize.enabled:
        return fp32, {"quantized": False}
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    exclude, report = mixed_precision.resolve(fp32, calib, splits, cfg.quantize)
    chosen = cfg.quantize.model_copy(update={"exclude": exclude})
    return ptq.quantize_int8(fp32, calib, chosen), {"quantized": True, "exclude": exclude, **report}
