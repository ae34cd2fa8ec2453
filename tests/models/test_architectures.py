"""The built-in lightweight architectures and what the factory fills in from the data."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from kedro_edge.config import ModelSpec
from kedro_edge.errors import ConfigError
from kedro_edge.models import MLP, MobileNetV2, build_model
from kedro_edge.models.mobilenet import InvertedResidual


def _macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    return int(tp.utils.count_ops_and_params(model.eval(), torch.zeros(shape))[0])


def test_mobilenet_is_built_of_depthwise_inverted_residuals():
    model = MobileNetV2(in_channels=3, num_classes=7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    # a shortcut exactly where a block keeps its stride (1) and its width
    assert [b.use_residual for b in blocks] == [True, False, True] + [False, True, True] * 2 + [False, True]
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == len(blocks)
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_mobilenet_default_cost_suits_small_images_and_scales_with_width():
    full = _macs(MobileNetV2(), (1, 1, 32, 32))
    half = _macs(MobileNetV2(width_mult=0.5), (1, 1, 32, 32))
    assert 5e6 < full < 20e6  # documented: about 15 M MACs at 32x32
    assert half < 0.45 * full
    assert MobileNetV2(width_mult=0.25).eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)  # 8x8 too


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"settings": [[6, 24, 2]]}, "four positive integers"), ({"width_mult": 0}, "width_mult")],
)
def test_mobilenet_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**kwargs)


def test_mlp_takes_feature_vectors_and_flattens_images():
    assert MLP(13, 3)(torch.zeros(5, 13)).shape == (5, 3)
    assert MLP(64, 10, hidden=(32,), dropout=0.2)(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert MLP(13, 3, hidden=())(torch.zeros(2, 13)).shape == (2, 3)  # a linear classifier
    lazy = MLP(num_classes=4, hidden=(8,))
    lazy(torch.zeros(2, 1, 4, 5))
    assert lazy.features[0].in_features == 20  # deferred to the first batch


@pytest.mark.parametrize(
    ("input_shape", "in_features"), [((1, 13), 13), ((1, 1, 8, 8), 64), ((1, 3, 16, 16), 768)]
)
def test_factory_fills_in_features_from_the_data(input_shape, in_features):
    spec = ModelSpec(class_path="kedro_edge.models.MLP", kwargs={"hidden": [16]})
    model = build_model(spec, input_shape, num_classes=4)
    assert model.features[0].in_features == in_features
    assert model.classifier.out_features == 4
    assert model.training  # the probe forward pass leaves the mode as it was


def test_factory_fills_in_channels_for_images():
    spec = ModelSpec(class_path="kedro_edge.models.MobileNetV2", kwargs={"width_mult": 0.25})
    model = build_model(spec, (1, 3, 16, 16), num_classes=5)
    assert model.features[0][0].in_channels == 3
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


def test_a_model_that_cannot_take_the_data_fails_naming_the_key_and_shape():
    spec = ModelSpec(class_path="kedro_edge.models.ResidualCNN", kwargs={"widths": [4]})
    with pytest.raises(ConfigError) as err:
        build_model(spec, (1, 13), num_classes=3, key="compression.distill.student")
    message = str(err.value)
    assert "'compression.distill.student'" in message and "(1, 13)" in message
    assert "\n" not in message
