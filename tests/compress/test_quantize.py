import numpy as np
import torch
from torch import nn

from kedro_edge.compress.quantize import (
    ActivationFakeQuant,
    QuantConv2d,
    QuantLinear,
    fake_quant_weight,
    is_quantization_aware,
    prepare_qat,
    to_float,
)
from kedro_edge.data import calibration_samples


def test_weights_are_symmetric_int8_per_output_channel():
    w = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    q = fake_quant_weight(w)
    for c in range(6):
        scale = w[c].abs().max() / 127
        levels = torch.round(q[c] / scale)
        assert levels.abs().max() <= 127
        assert torch.allclose(levels * scale, q[c], atol=1e-6)  # on the channel's own grid
        assert (q[c] - w[c]).abs().max() <= scale / 2 + 1e-6


def test_straight_through_estimator_passes_gradients():
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    fake_quant_weight(w).sum().backward()
    assert torch.allclose(w.grad, torch.ones_like(w))


def test_activations_per_tensor_with_256_levels_after_calibration():
    fq = ActivationFakeQuant()
    fq.observing = True
    fq(torch.linspace(-1, 3, 1000))
    fq.observing = False
    out = fq(torch.linspace(-1, 3, 1000))
    assert len(torch.unique(out)) <= 256
    assert fq.min_val == -1 and fq.max_val == 3


def test_prepare_wraps_every_layer_and_calibrates_without_touching_batchnorm(teacher, splits):
    bn_before = [m.running_mean.clone() for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    qat = prepare_qat(teacher, calibration_samples(splits, 64))
    convs = sum(isinstance(m, nn.Conv2d) for m in teacher.modules())
    assert sum(isinstance(m, QuantConv2d) for m in qat.modules()) == convs
    assert sum(isinstance(m, QuantLinear) for m in qat.modules()) == 1
    assert all(bool(m.initialized) for m in qat.modules() if isinstance(m, ActivationFakeQuant))
    bn_after = [m.running_mean for m in qat.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_before, bn_after, strict=True))
    # fake quantization changes outputs a little, not the predictions much
    x = torch.from_numpy(splits.x("val"))
    with torch.no_grad():
        ref, sim = teacher(x), qat.eval()(x)
    assert not torch.equal(ref, sim)
    assert (ref.argmax(1) == sim.argmax(1)).float().mean() > 0.9


def test_to_float_restores_plain_layers_with_the_trained_weights(teacher, splits):
    qat = prepare_qat(teacher, calibration_samples(splits, 32))
    plain = to_float(qat)
    assert is_quantization_aware(qat) and not is_quantization_aware(plain)
    assert [type(m) for m in plain.modules()] == [type(m) for m in teacher.modules()]
    for a, b in zip(plain.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert np.isfinite(plain(torch.from_numpy(splits.x("val")[:4])).detach().numpy()).all()
