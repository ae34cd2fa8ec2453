"""Pruning the architectures users bring: real torchvision and timm models (random weights, 32x32)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
import torchvision
from torch import nn

from kedro_edge.compress import heads, prune
from kedro_edge.compress.prune import PruneParams, one_shot
from kedro_edge.compress.registry import Context
from kedro_edge.data import Splits
from kedro_edge.errors import ConfigError, RequiredStageError
from kedro_edge.models.footprint import footprint
from kedro_edge.models.training import TrainParams
from kedro_edge.runtimes.onnx_export import INPUT, to_onnx

X = torch.zeros(1, 3, 32, 32)
ONE_STEP = PruneParams(ratio=0.5, steps=1, finetune_epochs=0)


def _splits(shape=(3, 32, 32), n=30) -> Splits:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"x_{split}"] = rng.random((n, *shape), dtype=np.float32)
        arrays[f"y_{split}"] = np.arange(n) % 10
    return Splits(arrays)


def _ctx(splits: Splits) -> Context:
    return Context(splits, TrainParams(epochs=1, batch_size=16), None, None)


def _tiny_vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2)


def test_a_cnn_with_squeeze_excitation_and_hardswish_loses_channels():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    before = footprint(model, X)
    one_shot(model, X, ONE_STEP)
    assert footprint(model, X).macs < 0.6 * before.macs
    assert model(X).shape == (1, 10)


def test_vit_loses_whole_heads_and_the_attention_stays_consistent():
    torch.manual_seed(0)
    model = _tiny_vit().eval()
    reference = model(torch.rand(2, 3, 32, 32)).shape
    before = footprint(model, X)
    one_shot(model, X, ONE_STEP)
    counts = heads.counts(model)
    assert counts and all(0 < n < 3 for n in counts.values())  # vit_tiny has 3 heads a block
    for _, attn in heads.attention_modules(model):
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
        assert attn.proj.in_features == attn.num_heads * attn.head_dim
    assert footprint(model, X).macs < 0.7 * before.macs
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == reference
    exported = ort.InferenceSession(to_onnx(model, (1, 3, 32, 32)).SerializeToString())
    with torch.no_grad():
        assert np.allclose(exported.run(None, {INPUT: x.numpy()})[0], model(x).numpy(), atol=1e-4)


def test_a_model_the_pruner_cannot_trace_is_passed_on_with_one_line(caplog):
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    with caplog.at_level(logging.WARNING):
        out, report = prune.apply(model, ONE_STEP, _ctx(_splits()))
    assert report["method"] == "none" and "ZeroDivisionError" in report["skipped"]
    assert footprint(out, X) == footprint(model, X)
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("compression.prune: skipped")
    ]
    assert len(lines) == 1 and "set compression.prune.enabled: false" in lines[0]


def test_ignored_layers_keep_their_channels_and_a_pattern_that_matches_none_names_the_key():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    kept = {
        n: m.out_channels
        for n, m in model.named_modules()
        if n.startswith("layer1.") and isinstance(m, nn.Conv2d)
    }
    cfg = ONE_STEP.model_copy(update={"ignore": ["layer1.*"]})
    pruned, report = prune.structured_prune(model, _splits(), cfg, TrainParams(epochs=1, batch_size=16))
    modules = dict(pruned.named_modules())
    assert {n: modules[n].out_channels for n in kept} == kept
    assert modules["layer2.0.conv1"].out_channels < 128  # the rest is pruned
    assert {"layer": "layer1.0.conv1", "reason": "compression.prune.ignore"} in report["left_alone"]
    with pytest.raises(ConfigError, match=r"compression.prune.ignore': 'head\.\*' matches no layer"):
        one_shot(model, X, ONE_STEP.model_copy(update={"ignore": ["head.*"]}))


class GRUNet(nn.Module):
    """A recurrent classifier over the rows of a 1-channel image."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.gru = nn.GRU(32, 24, batch_first=True)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(torch.relu(self.embed(x[:, 0])))
        return self.head(out[:, -1])


def test_a_recurrent_net_is_passed_on_naming_the_recurrent_layer(caplog):
    with caplog.at_level(logging.WARNING):
        _, report = prune.apply(GRUNet().eval(), ONE_STEP, _ctx(_splits((1, 16, 16))))
    assert {"layer": "gru", "reason": "recurrent layer: its hidden size is not pruned"} in report[
        "left_alone"
    ]
    assert any(r.getMessage().endswith("recurrent layers: gru; set compression.prune.enabled: false")
               for r in caplog.records)  # fmt: skip


def test_required_pruning_of_a_recurrent_net_stops_the_run_naming_the_layer_and_the_key():
    from kedro_edge import nodes

    splits = _splits((1, 16, 16))
    compression = {"prune": {"required": True, "steps": 1, "finetune_epochs": 0}}
    training = {"epochs": 1, "batch_size": 16}
    with pytest.raises(RequiredStageError) as raised:
        nodes.apply_technique("prune", GRUNet().eval(), GRUNet().eval(), splits.arrays, compression, training)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("compression.prune.required: true but prune cannot take this architecture: ")
    assert "Torch-Pruning cannot trace the model" in message and "recurrent layers: gru" in message
    assert message.endswith(
        "(set compression.prune.required: false to pass it on, or compression.prune.ignore)"
    )
    # not required (the default): the same net goes through, unchanged
    compression["prune"]["required"] = False
    out, report = nodes.apply_technique("prune", GRUNet().eval(), None, splits.arrays, compression, training)
    assert report["method"] == "none" and isinstance(report["skipped"], str)


def test_required_pruning_stops_kedro_edge_check_on_shufflenet():
    from kedro_edge.nodes.check import check_stages
    from tests.pipelines.project import TINY

    compression = copy.deepcopy(TINY["parameters_compression.yml"]["compression"])
    compression["prune"]["required"] = True
    model = {"class_path": FAMILIES["shufflenet_v2_x0_5"]}
    stops = r"^compression\.prune\.required: true but prune cannot take this architecture: Torch-Pruning"
    with pytest.raises(RequiredStageError, match=stops):
        check_stages(_splits(n=20).arrays, model, {"batch_size": 16}, compression)


FAMILIES = {
    "mobilenet_v3_small": "torchvision.models.mobilenet_v3_small",
    "efficientnet_b0": "torchvision.models.efficientnet_b0",
    "regnet_x_400mf": "torchvision.models.regnet_x_400mf",
    "squeezenet1_1": "torchvision.models.squeezenet1_1",
    "resnet18": "torchvision.models.resnet18",
    "shufflenet_v2_x0_5": "torchvision.models.shufflenet_v2_x0_5",
}


@pytest.mark.parametrize("family", [*FAMILIES, "timm_convnext_atto", "timm_vit_tiny"])
def test_each_family_goes_through_every_stage_or_is_passed_on_in_one_line(family):
    from kedro_edge.nodes.check import check_stages
    from tests.pipelines.project import TINY

    if family == "timm_convnext_atto":
        model = {"class_path": "timm.create_model", "kwargs": {"model_name": "convnext_atto"}}
    elif family == "timm_vit_tiny":
        vit = {"model_name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2}
        model = {"class_path": "timm.create_model", "kwargs": vit}
    else:
        model = {"class_path": FAMILIES[family]}
    compression = TINY["parameters_compression.yml"]["compression"]
    rows = {r.stage: r for r in check_stages(_splits(n=20).arrays, model, {"batch_size": 16}, compression)}
    assert all(r.applies or "skipped" in r.detail or "fails (" in r.detail for r in rows.values())
    assert rows["export"].applies, rows["export"]  # an INT8 graph in every case
    if family == "shufflenet_v2_x0_5":
        assert not rows["prune"].applies  # channel shuffle: passed on, saying so
    else:
        assert rows["prune"].applies and rows["prune"].macs < 0.8 * rows["teacher"].macs, rows["prune"]
    assert all(r.applies for name, r in rows.items() if name not in ("prune", "lowrank")), rows
