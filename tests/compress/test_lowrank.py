import numpy as np
import pytest
import torch
from torch import nn

from kedro_edge.compress.lowrank import factorise, lowrank, split_layer
from kedro_edge.compress.prune import prune
from kedro_edge.compress.ptq import quantize_int8
from kedro_edge.config import LowRankParams, PruneParams, QuantizeParams, TrainParams
from kedro_edge.data import calibration_samples
from kedro_edge.models.footprint import footprint
from kedro_edge.models.training import accuracy, predict
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session
from tests.conftest import conv_out_channels

FAST = TrainParams(epochs=1, batch_size=64, lr=0.01)
SPECTRUM = [4.0, 2.0, 1.0, 0.5, 0.25]  # shares of sigma^2 kept by ranks 1..5: .751 .939 .985 .997 1


def _with_spectrum(rows: int, cols: int, s: list[float]) -> torch.Tensor:
    """A rows x cols matrix whose nonzero singular values are ``s``."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T


def _layer_with_spectrum(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A layer whose weight, arranged as the ``kind`` scheme's matrix, has the singular values
    ``SPECTRUM``; built from the scheme's definition here, independently of the module."""
    torch.manual_seed(0)
    if kind == "linear":
        layer, x = nn.Linear(40, 32), torch.randn(64, 40)
        w = _with_spectrum(32, 40, SPECTRUM)
    elif kind == "channel":  # (out, in*k*k)
        layer, x = nn.Conv2d(8, 12, 3, padding=1), torch.randn(4, 8, 6, 6)
        w = _with_spectrum(12, 8 * 9, SPECTRUM).reshape(12, 8, 3, 3)
    else:  # spatial: M[(c, i), (n, j)] = W[n, c, i, j]
        layer, x = nn.Conv2d(8, 12, 3, padding=1), torch.randn(4, 8, 6, 6)
        w = _with_spectrum(8 * 3, 12 * 3, SPECTRUM).reshape(8, 3, 12, 3).permute(2, 0, 1, 3)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer, x


@pytest.mark.parametrize(
    "layer, x",
    [
        (nn.Linear(12, 7), torch.randn(3, 12)),
        (nn.Conv2d(4, 6, 1), torch.randn(2, 4, 5, 5)),
        (nn.Conv2d(4, 6, 3, padding=1), torch.randn(2, 4, 7, 7)),
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), torch.randn(2, 4, 9, 8)),
        (nn.Conv2d(3, 5, (5, 3), stride=(2, 1), padding=(2, 1), dilation=(1, 2)), torch.randn(2, 3, 11, 9)),
        (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), torch.randn(2, 4, 6, 7)),
        (nn.Conv2d(4, 6, (3, 5), padding="same"), torch.randn(2, 4, 6, 7)),
    ],
    ids=["linear", "conv1x1", "conv3x3", "strided", "rect-dilated", "reflect", "same"],
)
@pytest.mark.parametrize("conv", ["channel", "spatial"])
def test_full_rank_factorisation_reproduces_the_layer(layer, x, conv):
    torch.manual_seed(0)
    full = 10_000  # clipped to the matrix's full rank
    pair = split_layer(layer, full, conv)
    torch.testing.assert_close(pair(x), layer(x), atol=1e-4, rtol=1e-4)
    first, second = pair
    if isinstance(layer, nn.Linear):
        assert (first.in_features, second.out_features) == (12, 7)
        assert first.bias is None and second.bias is not None
    elif conv == "spatial" and min(layer.kernel_size) > 1:
        kh, kw = layer.kernel_size
        assert (first.kernel_size, second.kernel_size) == ((kh, 1), (1, kw))
        assert first.out_channels == min(layer.in_channels * kh, layer.out_channels * kw)
    else:  # channel scheme, and 1x1 convs under either setting
        assert (first.kernel_size, second.kernel_size) == (layer.kernel_size, (1, 1))
        assert first.stride == layer.stride and second.stride == (1, 1)
    assert first.bias is None and (second.bias is None) == (layer.bias is None)


@pytest.mark.parametrize("kind", ["linear", "channel", "spatial"])
@pytest.mark.parametrize(
    "energy, min_rank, rank", [(0.7, 1, 1), (0.9, 1, 2), (0.95, 1, 3), (0.99, 1, 4), (1.0, 1, 5), (0.7, 3, 3)]
)
def test_rank_is_the_smallest_keeping_the_energy(kind, energy, min_rank, rank):
    layer, x = _layer_with_spectrum(kind)
    model = nn.Sequential(layer)
    cfg = LowRankParams(
        enabled=True, energy=energy, min_rank=min_rank, conv="channel" if kind == "linear" else kind
    )
    student, report = factorise(model, x[:1], cfg)
    [entry] = report["layers"]
    s2 = np.square(SPECTRUM)
    assert entry["rank"] == rank
    assert entry["energy"] == pytest.approx(s2[:rank].sum() / s2.sum())
    assert entry["kind"] == {"linear": "linear", "channel": "conv_channel", "spatial": "conv_spatial"}[kind]
    first, second = student[0]
    assert (first.out_features if kind == "linear" else first.out_channels) == rank
    if rank == len(SPECTRUM):  # the whole spectrum kept: the factorised layer is exact
        torch.testing.assert_close(student(x), layer(x), atol=1e-4, rtol=1e-4)
    else:  # the largest singular values kept: the error is about what the dropped ones held
        with torch.no_grad():
            error = float((student(x) - layer(x)).norm() / layer(x).norm())
        dropped = np.sqrt(s2[rank:].sum() / s2.sum())
        assert 0.5 * dropped < error < 2 * dropped


@pytest.mark.parametrize("conv", ["channel", "spatial"])
def test_macs_go_down_by_what_the_report_says(teacher, example, conv):
    cfg = LowRankParams(enabled=True, energy=0.6, conv=conv)
    student, report = factorise(teacher, example, cfg)
    before, after = footprint(teacher, example), footprint(student, example)
    assert report["before"] == {"macs": before.macs, "params": before.params}
    assert report["after"] == {"macs": after.macs, "params": after.params}
    # Torch-Pruning's counter and the per-layer costs agree to the MAC
    saved = sum(layer["macs_before"] - layer["macs_after"] for layer in report["layers"])
    assert saved > 0.2 * before.macs
    assert before.macs - after.macs == saved
    assert all(layer["rank"] < layer["full_rank"] for layer in report["layers"])
    # the classes stay, the model runs, the teacher is untouched
    assert student(example).shape == (1, 10)
    assert [m for m in student.modules() if isinstance(m, nn.Linear)][-1].out_features == 10
    assert not any(isinstance(m, nn.Sequential) and len(m) == 2 for m in teacher.classifier.modules())
    assert footprint(teacher, example) == before


@pytest.mark.parametrize("target", [0.7, 0.5])
def test_target_macs_is_met_without_overshooting(teacher, example, target):
    student, report = factorise(
        teacher, example, LowRankParams(enabled=True, energy=None, target_macs=target)
    )
    kept = footprint(student, example).macs / footprint(teacher, example).macs
    assert report["target_met"]
    assert kept <= target
    assert kept > target - 0.1  # the largest threshold meeting it, not a much smaller one
    assert 0 < report["energy"] < 1


def test_unreachable_target_is_reported(teacher, example):
    student, report = factorise(teacher, example, LowRankParams(enabled=True, energy=None, target_macs=0.01))
    assert report["target_met"] is False
    assert report["after"]["macs"] < report["before"]["macs"]  # as far as it goes


def test_layers_that_would_cost_more_are_skipped_with_a_reason():
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # depthwise
        nn.Conv2d(4, 16, 1),  # full rank 4: 4 * (4 + 16) = 80 >= 64 weights
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 32),  # rank 32 of 32: costs more
        nn.ReLU(),
        nn.Linear(32, 3),
    )
    x = torch.randn(1, 4, 5, 5)
    student, report = factorise(model, x, LowRankParams(enabled=True, energy=1.0))
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"0", "1", "3", "5"} and report["layers"] == []
    assert "grouped" in reasons["0"]
    assert "would cost" in reasons["1"] and "not fewer than" in reasons["3"]
    assert [type(m) for m in student] == [type(m) for m in model]
    torch.testing.assert_close(student(x), model(x))
    # at a low enough rank the same layers are worth factorising; the depthwise conv never is
    _, report = factorise(model, x, LowRankParams(enabled=True, energy=0.3))
    assert {layer["name"] for layer in report["layers"]} == {"1", "3", "5"}
    assert [s["name"] for s in report["skipped"]] == ["0"]


def test_a_factorised_model_can_still_be_pruned(teacher, splits, example):
    factorised, _ = factorise(teacher, example, LowRankParams(enabled=True, energy=0.8))
    pruned, report = prune(factorised, splits, PruneParams(ratio=0.5, steps=1, finetune_epochs=0), FAST)
    before, after = conv_out_channels(factorised), conv_out_channels(pruned)
    assert len(before) > len(conv_out_channels(teacher))  # the factorised pairs are there
    assert sum(after) < 0.7 * sum(before)
    assert footprint(pruned, example).macs < 0.5 * footprint(factorised, example).macs
    assert pruned(example).shape == (1, 10)


def test_a_factorised_model_exports_to_int8_onnx(teacher, splits, example):
    factorised, _ = factorise(teacher, example, LowRankParams(enabled=True, energy=0.9, conv="spatial"))
    fp32 = to_onnx(factorised, splits.input_shape)
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    assert len(convs) == len(conv_out_channels(factorised)) > len(conv_out_channels(teacher))
    x, y = splits.x("test"), splits.y("test")
    np.testing.assert_allclose(ort_predict(session(fp32), x), predict(factorised, x), atol=1e-4)
    int8 = quantize_int8(fp32, calibration_samples(splits, 64), QuantizeParams())
    ops = [n.op_type for n in int8.graph.node]
    assert "QLinearConv" in ops or ("QuantizeLinear" in ops and "DequantizeLinear" in ops)
    acc32 = (ort_predict(session(fp32), x).argmax(1) == y).mean()
    acc8 = (ort_predict(session(int8), x).argmax(1) == y).mean()
    assert acc8 >= acc32 - 0.05


def test_disabled_returns_an_unchanged_copy(teacher, splits):
    student, report = lowrank(teacher, splits, LowRankParams(enabled=False), FAST)
    assert student is not teacher
    assert report["method"] == "none" and report["before"] == report["after"]
    assert str(student) == str(teacher)
    for a, b in zip(student.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_lowrank_fine_tunes_and_reports_validation_accuracy(teacher, splits, example):
    cfg = LowRankParams(enabled=True, energy=0.5, finetune_epochs=1, lr=0.01)
    raw, _ = factorise(teacher, example, cfg)
    tuned, report = lowrank(teacher, splits, cfg, FAST)
    x, y = splits.x("val"), splits.y("val")
    assert report["method"] == "lowrank" and report["layers"]
    assert report["val_accuracy_before_finetune"] == accuracy(raw, x, y)
    assert report["val_accuracy"] == accuracy(tuned, x, y)
    assert report["val_accuracy"] > report["val_accuracy_before_finetune"]
    assert str(tuned) == str(raw)  # same architecture, trained weights
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), raw.parameters(), strict=True))
