import copy

import numpy as np
import pytest
import torch

from kedro_edge.compress.distill import distill, distillation_loss
from kedro_edge.config import DistillParams, TrainParams
from kedro_edge.data.task import Task
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


def test_dense_outputs_get_per_pixel_soft_targets_averaged_over_the_pixels():
    """(N, C, H, W) logits against (N, H, W) masks: the classification loss of every pixel as a
    sample, so its scale does not grow with the image (a sum over pixels would be H*W times it)."""
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 3, 4, 5)) * 2, rng.normal(size=(2, 3, 4, 5)) * 2
    masks = rng.integers(0, 3, size=(2, 4, 5)).astype(np.uint8)
    dense = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(masks), 4.0, 0.7, Task.DENSE)
    flat = lambda z: torch.tensor(z.transpose(0, 2, 3, 1).reshape(-1, 3))  # noqa: E731
    per_pixel = distillation_loss(flat(s), flat(t), torch.tensor(masks.reshape(-1)).long(), 4.0, 0.7)
    assert dense.item() == pytest.approx(per_pixel.item(), rel=1e-6)


def test_regression_distils_towards_the_teachers_outputs():
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 4.0])
    # soft: mean (1, 0)^2 = 0.5; hard: mean (0, 2)^2 = 2
    got = distillation_loss(s, t, y, 4.0, 0.5, Task.REGRESSION)
    assert got.item() == pytest.approx(0.5 * 0.5 + 0.5 * 2.0)


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
