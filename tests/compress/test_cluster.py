import copy
import lzma

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from kedro_edge.compress.cluster import SharedWeights, cluster, cluster_weights, distinct_values_per_channel
from kedro_edge.compress.prune import prune
from kedro_edge.compress.ptq import quantize_int8
from kedro_edge.compress.quantize import QuantConv2d, is_quantization_aware, prepare_qat
from kedro_edge.config import ClusterParams, PruneParams, QuantizeParams, TrainParams
from kedro_edge.data import calibration_samples
from kedro_edge.runtimes.onnx_export import to_onnx
from tests.conftest import conv_out_channels

FAST = TrainParams(epochs=1, batch_size=64, lr=0.01)
K = 8
# default min_weights (256): the tiny CNN's stem conv (72 weights) and classifier (160) stay float
CFG = ClusterParams(enabled=True, k=K, finetune_epochs=2, lr=1e-3)


def weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).weight.detach()


def n_distinct(t: torch.Tensor) -> int:
    return len(torch.unique(t))


def int8(model: nn.Module, splits) -> onnx.ModelProto:
    return quantize_int8(
        to_onnx(model, splits.input_shape), calibration_samples(splits, 64), QuantizeParams()
    )


@pytest.fixture(scope="module")
def clustered(_trained, splits):
    """(teacher, clustered without training, clustered and fine-tuned, its report)."""
    teacher = copy.deepcopy(_trained)
    raw, _ = cluster_weights(teacher, CFG)
    tuned, report = cluster(teacher, splits, CFG, FAST)
    return teacher, raw, tuned, report


@pytest.fixture(scope="module")
def int8_pair(_trained, splits):
    """INT8 graphs of the teacher with every layer clustered and fine-tuned, and of the teacher."""
    tuned, _ = cluster(_trained, splits, CFG.model_copy(update={"min_weights": 1}), FAST)
    return int8(tuned, splits), int8(_trained, splits)


def test_each_large_layer_keeps_at_most_k_values_each_weight_on_its_nearest(teacher):
    model, report = cluster_weights(teacher, CFG)
    assert report["method"] == "kmeans" and report["k"] == K
    names = [layer["name"] for layer in report["layers"]]
    assert names == [
        "features.1.body.0",
        "features.1.body.3",
        "features.2.0",
        "features.3.body.0",
        "features.3.body.3",
    ]
    for layer in report["layers"]:
        before, after = weight(teacher, layer["name"]), weight(model, layer["name"])
        assert layer["distinct_before"] == n_distinct(before) == before.numel()
        assert layer["distinct_after"] == n_distinct(after) <= K
        # k-means assignment: each weight became the shared value nearest to it
        shared = torch.unique(after)
        nearest = (before.reshape(-1, 1) - shared).abs().min(1).values
        assert torch.allclose((after - before).abs().reshape(-1), nearest)
    # the input model is untouched
    assert all(n_distinct(weight(teacher, n)) > K for n in names)


def test_finetuning_moves_the_shared_values_and_keeps_them_shared(clustered):
    _, raw, tuned, report = clustered
    for layer in report["layers"]:
        before, after = weight(raw, layer["name"]), weight(tuned, layer["name"])
        assert layer["distinct_after_finetune"] == n_distinct(after) <= K
        assert not torch.equal(before, after)  # the centroids were trained
        for value in torch.unique(before):  # weights that shared a value still share one
            assert n_distinct(after[before == value]) == 1
    assert report["val_accuracy"] >= report["val_accuracy_before_finetune"]
    # a plain module again: no parametrization left, weights trainable as before
    assert not any(parametrize.is_parametrized(m) for m in tuned.modules())
    assert all(p.requires_grad for p in tuned.parameters())
    assert tuned.state_dict().keys() == raw.state_dict().keys()


def test_small_layers_biases_and_batchnorm_parameters_stay_as_they_were(clustered):
    teacher, _, tuned, report = clustered
    assert {s["name"] for s in report["skipped"]} == {"features.0.0", "classifier"}
    assert all("< 256" in s["reason"] for s in report["skipped"])
    clustered_weights = {f"{layer['name']}.weight" for layer in report["layers"]}
    others = [(n, p) for n, p in tuned.named_parameters() if n not in clustered_weights]
    assert len(others) == 1 + 2 + 2 * 6  # stem weight, classifier weight and bias, six BatchNorms
    reference = dict(teacher.named_parameters())
    for name, p in others:
        assert torch.equal(p, reference[name]), name
    assert n_distinct(weight(tuned, "classifier")) == 160


def test_int8_export_holds_at_most_k_values_per_output_channel(int8_pair):
    clustered_q, plain_q = int8_pair
    counts, plain = distinct_values_per_channel(clustered_q), distinct_values_per_channel(plain_q)
    # measured: clustered 7 or 8 for each of the 7 weights; unclustered 9 (stem) to 112
    assert len(counts) == len(plain) == 7  # six convs (BatchNorm folded) and the classifier
    assert max(counts.values()) <= K
    assert max(plain.values()) > 8 * K
    # counted per output channel: the stem's 8 channels hold 9 weights each, the tensor many more
    stem = next(t for t in plain_q.graph.initializer if list(t.dims) == [8, 1, 3, 3])
    assert plain[stem.name] <= 9 < len(np.unique(numpy_helper.to_array(stem)))


def test_clustered_int8_model_compresses_far_better(int8_pair):
    clustered_q, plain_q = int8_pair
    # same tensors, same raw size (the whole files may differ by a byte or two: a zero point that is
    # stored as a varint takes two bytes from 128 on, and calibration differs between the two)
    raw = [sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer) for m in int8_pair]
    assert raw[0] == raw[1]
    assert abs(clustered_q.ByteSize() - plain_q.ByteSize()) <= 16
    size = {name: len(lzma.compress(m.SerializeToString())) for name, m in zip("cp", int8_pair, strict=True)}
    assert size["c"] < 0.75 * size["p"]  # measured 0.63 (6.1 KB vs 9.7 KB) with k=8


def test_composes_with_structured_pruning(teacher, splits):
    pruned, _ = prune(teacher, splits, PruneParams(ratio=0.5, steps=1, finetune_epochs=0), FAST)
    cfg = CFG.model_copy(update={"min_weights": 1, "finetune_epochs": 1})
    model, report = cluster(pruned, splits, cfg, FAST)
    assert conv_out_channels(model) == conv_out_channels(pruned) != conv_out_channels(teacher)
    assert len(report["layers"]) == 7
    for layer in report["layers"]:
        assert layer["distinct_before"] > K >= layer["distinct_after_finetune"]
        assert n_distinct(weight(model, layer["name"])) <= K
    assert max(distinct_values_per_channel(int8(model, splits)).values()) <= K


def test_layers_inside_qat_wrappers_are_clustered(teacher, splits):
    qat = prepare_qat(teacher, calibration_samples(splits, 64))
    model, report = cluster_weights(qat, CFG)
    assert is_quantization_aware(model)
    wrapped = {f"{name}.inner" for name, m in model.named_modules() if isinstance(m, QuantConv2d)}
    names = {layer["name"] for layer in report["layers"]}
    assert len(names) == 5 and names <= wrapped
    assert all(n_distinct(weight(model, name)) <= K for name in names)


def test_disabled_returns_an_unchanged_copy(teacher, splits):
    model, report = cluster(teacher, splits, ClusterParams(enabled=False), FAST)
    assert report == {"method": "none"}
    assert model is not teacher
    for a, b in zip(model.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_centroid_gradient_is_the_same_sum_every_time():
    """Plain indexing's backward adds in parallel in a varying order (8 distinct results in 20
    runs here): the centroids, the INT8 scales and model.onnx's bytes then varied between runs."""
    torch.manual_seed(0)
    weight = torch.randint(0, 16, (512, 512, 3)).float()
    shared, grad, seen = SharedWeights(weight), torch.randn(weight.shape), set()
    for _ in range(10):
        shared.centroids.grad = None
        shared(weight).backward(grad)
        seen.add(shared.centroids.grad.numpy().tobytes())
    assert len(seen) == 1
    exact = torch.zeros(16, dtype=torch.float64).index_add_(
        0, shared.index.reshape(-1), grad.reshape(-1).double()
    )
    assert torch.allclose(shared.centroids.grad.double(), exact)
