"""MobileNetV2 and the MLP through every stage: prune, fake-quant, distill, ONNX, INT8 in ORT.

Tiny instances, a few epochs: these tests check that each stage works on the architecture
(channels and neurons really removed, depthwise groups kept, a QDQ graph that agrees with
torch), not how accurate the models get.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine

from kedro_edge.compress import distill, prune, ptq, quantize
from kedro_edge.config import DistillParams, PruneParams, QuantizeParams, TrainParams
from kedro_edge.data import Splits, calibration_samples, split_arrays, standardise
from kedro_edge.models import MLP, MobileNetV2
from kedro_edge.models.training import accuracy, fit, predict
from kedro_edge.runtimes import onnx_export
from kedro_edge.runtimes import onnxruntime as ort_host

TRAIN = TrainParams(epochs=3, batch_size=64, lr=0.01, patience=10)
SMALL_DATA = TrainParams(epochs=10, batch_size=16, lr=0.01, patience=10)  # wine: 115 training rows
TINY_MOBILENET = {
    "width_mult": 0.25,
    "settings": [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 2, 2]],
    "last_channels": 64,
}


def _wine() -> Splits:
    bunch = load_wine()
    arrays = split_arrays(bunch.data.astype(np.float32), bunch.target, 0.15, 0.2, seed=0, image_size=None)
    return Splits(standardise(arrays))


CASES = {
    "mobilenet-digits": lambda digits: (MobileNetV2(1, 10, **TINY_MOBILENET), digits, TRAIN),
    "mlp-digits": lambda digits: (MLP(64, 10, hidden=(32, 16)), digits, TRAIN),  # 8x8 images, flattened
    "mlp-wine": lambda digits: (MLP(13, 3, hidden=(32, 16)), _wine(), SMALL_DATA),  # (N, 13) vectors
}


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, splits: Splits) -> tuple[torch.nn.Module, Splits, TrainParams]:
    torch.manual_seed(0)
    model, data, train = CASES[request.param](splits)
    fit(model, data, epochs=train.epochs, batch_size=train.batch_size, lr=train.lr)
    return model.eval(), data, train


@pytest.fixture(scope="module")
def pruned(trained) -> tuple[torch.nn.Module, dict]:
    teacher, data, train = trained
    return prune.prune(teacher, data, PruneParams(ratio=0.5, steps=1, finetune_epochs=1), train)


def _widths(model: torch.nn.Module) -> list[int]:
    """Output channels of every conv and output neurons of every linear layer, in order."""
    return [
        m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]


def test_structured_pruning_removes_channels_or_neurons(trained, pruned):
    teacher, data, _ = trained
    student, report = pruned
    before, after = _widths(teacher), _widths(student)
    assert len(before) == len(after)
    assert after[-1] == before[-1]  # the classes stay
    assert all(a < b for a, b in zip(after[:-1], before[:-1], strict=True))  # every hidden layer narrower
    assert report["after"]["macs"] < 0.6 * report["before"]["macs"]
    assert report["after"]["params"] < 0.6 * report["before"]["params"]
    for m in student.modules():  # DepGraph pruned each depthwise conv with its expansion
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == m.in_channels == m.out_channels
    assert predict(student, data.x("test")).shape == (len(data.y("test")), before[-1])


def test_fake_quant_keeps_depthwise_groups_and_the_predictions(trained, pruned):
    _, data, _ = trained
    student, _ = pruned
    qat = quantize.prepare_qat(student, calibration_samples(data, 64))
    wrapped = [m for m in qat.modules() if isinstance(m, (quantize.QuantConv2d, quantize.QuantLinear))]
    assert len(wrapped) == len(_widths(student))
    assert [m.inner.groups for m in wrapped if isinstance(m, quantize.QuantConv2d)] == [
        m.groups for m in student.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    x = data.x("test")
    assert (predict(qat, x).argmax(1) == predict(student, x).argmax(1)).mean() >= 0.9


def _has_avx512_vnni() -> bool:
    try:
        return "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_distilled_int8_graph_runs_in_ort_and_agrees_with_torch(request, trained, pruned):
    if "mobilenet" in request.node.name and not _has_avx512_vnni():
        # measured on an AVX2-only CPU (AMD EPYC, ORT 1.31 and 1.32): the tiny depthwise net's INT8
        # graph agrees with its fake-quant torch module on 69% of test images (S8S8 72%, per-tensor
        # 85%), 90%+ on AVX-512 VNNI: ORT's INT8 kernels differ by CPU; the parity gates catch it
        request.applymarker(pytest.mark.xfail(reason="INT8 depthwise convs in ORT on a CPU without VNNI"))
    teacher, data, train = trained
    calib = calibration_samples(data, 64)
    student = quantize.prepare_qat(copy.deepcopy(pruned[0]), calib)
    distill.distill(student, teacher, data, DistillParams(epochs=1), train)
    assert accuracy(student, data.x("test"), data.y("test")) > 2 / data.num_classes  # it learned

    fp32 = onnx_export.to_onnx(quantize.float_module(student), data.input_shape)
    int8 = ptq.quantize_int8(fp32, calib, QuantizeParams())
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = data.x("test")
    logits = ort_host.ort_predict(ort_host.session(int8), x)
    assert logits.shape == (len(x), data.num_classes)
    assert ort_host.parity(predict(student, x), logits)["top1_agreement"] >= 0.9
