"""The contract in model.onnx: metadata, and baked as the graph's first nodes (uint8 pixels in)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kedro_edge.data.preprocessing import METADATA_KEY, Preprocessing, prepare
from kedro_edge.runtimes import input_contract
from kedro_edge.runtimes.onnx_export import INPUT, to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session

PIXELS = np.random.default_rng(1).integers(0, 256, size=(16, 3, 6, 6), dtype=np.uint8)


def _model() -> onnx.ModelProto:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    return to_onnx(net, (1, 3, 6, 6))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_a_baked_model_fed_pixels_gives_the_outputs_of_the_plain_model_fed_prepared_inputs(layout):
    contract = Preprocessing(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], layout=layout, bake=True)
    prepared = prepare(PIXELS / 255.0, contract)
    plain = session(_model())
    baked_model = input_contract.stamp(input_contract.bake(_model(), contract), contract)
    baked = session(baked_model)

    pixel_shape = [d.dim_value or d.dim_param for d in baked_model.graph.input[0].type.tensor_type.shape.dim]
    assert baked.get_inputs()[0].type == "tensor(uint8)"
    assert pixel_shape == (["batch", 3, 6, 6] if layout == "nchw" else ["batch", 6, 6, 3])
    pixels = PIXELS if layout == "nchw" else PIXELS.transpose(0, 2, 3, 1)
    raw = baked.run(None, {INPUT: np.ascontiguousarray(pixels)})[0]
    assert np.allclose(raw, ort_predict(plain, prepared), atol=1e-4)
    # the host feeds prepared inputs through the contract in the model's own metadata
    assert np.allclose(ort_predict(baked, prepared), raw, atol=1e-4)
    assert input_contract.contract_of(baked) == contract


def test_stamp_writes_the_contract_once_and_nothing_without_one():
    contract = Preprocessing(mean=[0.5], std=[0.5])
    model = input_contract.stamp(input_contract.stamp(_model(), contract), contract)
    assert [p.key for p in model.metadata_props].count(METADATA_KEY) == 1
    assert input_contract.contract_of(model) == contract
    assert input_contract.stamp(_model(), None).SerializeToString() == _model().SerializeToString()
