"""ONNX export of a float torch module: dynamic batch axis, checked, intermediate shapes dropped.

The graph's input and output names (``INPUT``, ``OUTPUT``) are the contract every runtime,
the agent and the datasets rely on. Fake-quant wrappers are the caller's to remove first
(``kedro_edge.compress.quantize.to_float``): this layer knows nothing of compression.
"""

from __future__ import annotations

import io

import onnx
import torch
from pydantic import Field
from torch import nn

from kedro_edge.schema import Strict


class ExportParams(Strict):
    opset: int = Field(17, ge=13, le=21)


INPUT, OUTPUT = "input", "logits"


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` with strict shape inference; returns the model without value_info.

    Intermediate shapes are dropped from the file: ONNX Runtime infers them at load, and
    on a small INT8 model they are a fifth of the bytes shipped to every device.
    """
    onnx.checker.check_model(model, full_check=True)
    del model.graph.value_info[:]
    return model


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = 17) -> onnx.ModelProto:
    """Export a float module (in eval mode) with a dynamic batch axis."""
    plain = model.eval()
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
