"""ONNX export (FP32, dynamic batch axis) and INT8 conversion with ONNX Runtime's quantizer.

INT8 is QDQ with int8 per-channel weights and (by default) uint8 activations, statically
calibrated on training images. U8S8 because it is what ORT fuses fully on x86-64 (every
Conv becomes a QLinearConv; with S8S8 the Conv+ReLU nodes stayed float here), and QDQ
because QOperator S8S8 is slow on x86-64; dynamic quantization of Conv is slow too
(onnxruntime#12854). MinMax calibration is the default: it
has had none of the QDQ bugs of entropy/percentile (onnxruntime#11928).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from kedro_edge.compress.quantize import is_quantization_aware, to_float
from kedro_edge.config import QuantizeParams

INPUT, OUTPUT = "input", "logits"

ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` with strict shape inference; returns the model without value_info.

    Intermediate shapes are dropped from the file: ONNX Runtime infers them at load, and
    on a small INT8 model they are a fifth of the bytes shipped to every device.
    """
    onnx.checker.check_model(model, full_check=True)
    del model.graph.value_info[:]
    return model


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = 17) -> onnx.ModelProto:
    """Export a float module (fake-quant wrappers removed first) with a dynamic batch axis."""
    plain = to_float(model) if is_quantization_aware(model) else model.eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        plain,
        (torch.zeros(input_shape),),
        buffer,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,  # see PITFALLS: Export
    )
    return check(onnx.load_from_string(buffer.getvalue()))


class _Batches(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self._items = iter([{INPUT: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_int8(fp32: onnx.ModelProto, calibration: np.ndarray, cfg: QuantizeParams) -> onnx.ModelProto:
    """Static INT8 QDQ model of ``fp32``, activation ranges calibrated on ``calibration`` images."""
    with tempfile.TemporaryDirectory(prefix="kedro-edge-quant-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(fp32, src)
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(out),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=cfg.per_channel,
            activation_type=ACTIVATION_TYPES[cfg.activation_type],
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[cfg.calibrate_method],
        )
        return check(onnx.load(out))
