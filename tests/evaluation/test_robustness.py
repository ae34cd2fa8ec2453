"""The perturbed test copy: seeded, what the parameters say, and it costs a model accuracy."""

import numpy as np
import pytest

from kedro_edge.config import RobustnessParams, ValidationParams
from kedro_edge.evaluation.robustness import perturbed_copy
from kedro_edge.evaluation.stage import evaluate_stage
from kedro_edge.runtimes.onnx_export import to_onnx


def _images(n=50, size=12):
    return np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32)


def test_the_copy_is_seeded_and_leaves_the_input_alone():
    x = _images()
    before = x.copy()
    cfg = RobustnessParams()
    assert np.array_equal(perturbed_copy(x, cfg), perturbed_copy(x, cfg))
    assert not np.array_equal(perturbed_copy(x, cfg), perturbed_copy(x, cfg.model_copy(update={"seed": 1})))
    assert np.array_equal(x, before)


def test_shift_moves_pixels_by_at_most_max_shift():
    x = np.zeros((200, 1, 9, 9), np.float32)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = perturbed_copy(x, RobustnessParams(perturbations=["shift"], max_shift=2))
    rows, cols = np.nonzero(out[:, 0].max(axis=2))[1], np.nonzero(out[:, 0].max(axis=1))[1]
    assert set(rows) == set(cols) == {2, 3, 4, 5, 6}  # every offset in -2..2 happens, nothing further
    assert (out.reshape(200, -1).sum(1) == 1).all()  # the pixel moved, nothing else changed


def test_noise_has_the_configured_spread_and_stays_in_range():
    x = np.full((100, 1, 16, 16), 0.5, np.float32)
    out = perturbed_copy(x, RobustnessParams(perturbations=["noise"], noise_std=0.1))
    assert (out - x).std() == pytest.approx(0.1, rel=0.05)
    assert out.min() >= 0 and out.max() <= 1


def test_feature_vectors_get_noise_but_no_shift():
    x = np.zeros((100, 6), np.float32)
    assert np.array_equal(perturbed_copy(x, RobustnessParams(perturbations=["shift"])), x)
    noisy = perturbed_copy(x, RobustnessParams(perturbations=["noise"], noise_std=0.5))
    assert noisy.std() == pytest.approx(0.5, rel=0.1) and noisy.min() < 0  # no clipping for features


def test_robust_accuracy_is_measured_beside_clean_accuracy_through_onnx_runtime(teacher, splits):
    cfg = ValidationParams(latency={"warmup": 1, "min_runs": 5, "min_seconds": 0})
    strong = RobustnessParams(perturbations=["shift", "noise"], max_shift=2, noise_std=0.3)
    robust_x = perturbed_copy(splits.x("test"), strong)
    result = evaluate_stage(
        to_onnx(teacher, splits.input_shape), teacher, splits, cfg.latency, robust_x=robust_x
    )
    fig = result.figures
    assert fig.n == len(splits.y("test"))
    assert fig.accuracy_ci[0] < fig.accuracy < fig.accuracy_ci[1]
    # 8x8 digits shifted by up to 2 pixels with strong noise: a model trained clean loses accuracy
    assert fig.robust_accuracy < fig.accuracy - 0.05
    assert result.robust_scores.shape == result.scores.shape == (fig.n,)
