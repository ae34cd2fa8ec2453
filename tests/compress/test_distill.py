import copy

import numpy as np
import pytest
import torch

from kedro_edge.compress.distill import distill, distillation_loss
from kedro_edge.config import DistillParams, TrainParams
from kedro_edge.models import ResidualCNN
from kedro_edge.models.training import predict


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.7), (2.0, 0.0), (3.0, 1.0)])
def test_loss_is_the_documented_formula(temperature, alpha):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    y = np.array([0, 1, 2, 3, 1])
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(1).mean()
    ce = -np.log(_softmax(s)[np.arange(5), y]).mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_zero_when_student_equals_teacher_and_alpha_is_one():
    z = torch.randn(3, 5)
    assert distillation_loss(z, z, torch.tensor([0, 1, 2]), 4.0, 1.0).item() == pytest.approx(0, abs=1e-6)


def test_distillation_moves_the_student_towards_the_teacher(teacher, splits):
    torch.manual_seed(1)
    student = ResidualCNN(widths=(4, 8))
    untrained = copy.deepcopy(student)
    distill(student, teacher, splits, DistillParams(epochs=3, lr=0.01, alpha=1.0), TrainParams(batch_size=32))
    x = splits.x("val")
    target = predict(teacher, x).argmax(1)
    before = (predict(untrained, x).argmax(1) == target).mean()
    after = (predict(student, x).argmax(1) == target).mean()
    assert after > max(before, 0.7)
