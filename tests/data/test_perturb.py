"""Training augmentation: a share of each batch perturbed, and the teacher asked about those images."""

import numpy as np
import pytest
import torch

from kedro_edge.compress.distill import DistillParams, distill
from kedro_edge.data.perturb import AugmentParams, augment_batch
from kedro_edge.data.preprocessing import Preprocessing, normalise
from kedro_edge.models import ResidualCNN
from kedro_edge.models.training import TrainParams


def test_a_share_of_the_batch_is_perturbed_with_a_new_draw_each_time():
    x = np.full((400, 1, 8, 8), 0.5, np.float32)
    cfg = AugmentParams(enabled=True, share=0.25, perturbations=["noise"], noise_std=0.1)
    rng = np.random.default_rng(0)
    first, second = augment_batch(x, cfg, None, rng), augment_batch(x, cfg, None, rng)
    changed = (first != x).reshape(400, -1).any(1)
    assert changed.mean() == pytest.approx(0.25, abs=0.06)
    assert not np.array_equal(first, second)  # a fresh draw every batch
    assert np.array_equal(x, np.full_like(x, 0.5))  # the training data itself is left alone


def test_augmentation_perturbs_pixels_not_normalised_values():
    contract = Preprocessing(mean=[0.5], std=[0.25])
    pixels = np.full((50, 1, 8, 8), 0.5, np.float32)
    x = normalise(pixels, contract)  # all zeros
    out = augment_batch(x, AugmentParams(enabled=True, share=1.0, perturbations=["noise"]), contract, np.random.default_rng(1))
    # noise of 0.1 in pixel units is 0.4 after dividing by std 0.25
    assert out.std() == pytest.approx(0.4, rel=0.1)


def test_augmented_distillation_trains_on_perturbed_images_and_asks_the_teacher_about_them(teacher, splits):
    seen_by_student, seen_by_teacher = [], []
    student = ResidualCNN(in_channels=1, num_classes=10, widths=(8, 16))
    student.register_forward_pre_hook(lambda m, a: seen_by_student.append(a[0].clone()) if m.training else None)
    handle = teacher.register_forward_pre_hook(lambda m, a: seen_by_teacher.append(a[0].clone()))
    cfg = DistillParams(epochs=1, augment={"enabled": True, "share": 0.5, "perturbations": ["noise"], "noise_std": 0.2})
    try:
        distill(student, teacher, splits, cfg, TrainParams(batch_size=128))
    finally:
        handle.remove()
    clean = torch.from_numpy(splits.x("train"))
    batch = seen_by_student[0]
    rows_clean = [any(torch.equal(r, c) for c in clean) for r in batch[:40]]
    assert 0 < sum(rows_clean) < 40  # some rows as stored, some perturbed
    assert any(torch.equal(batch, t) for t in seen_by_teacher)  # the teacher saw the very same batch
