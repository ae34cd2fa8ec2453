import re

import numpy as np
import pytest

from kedro_edge.data import (
    Splits,
    calibration_samples,
    check_arrays,
    check_features,
    load_digits_arrays,
    split_arrays,
)
from kedro_edge.data.task import Task
from kedro_edge.errors import DataError
from kedro_edge.nodes import split_dataset


def test_digits_are_bundled_and_split_reproducibly():
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and set(labels) == set(range(10))
    a = split_arrays(images[:, None], labels, 0.15, 0.2, seed=1, image_size=16)
    b = split_arrays(images[:, None], labels, 0.15, 0.2, seed=1, image_size=16)
    assert a["x_train"].shape[1:] == (1, 16, 16)
    assert sum(len(a[f"y_{s}"]) for s in ("train", "val", "test")) == 1797
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # stratified: every class in every split
    assert all(len(np.unique(a[f"y_{s}"])) == 10 for s in ("train", "val", "test"))
    # disjoint splits
    c = split_arrays(images[:, None], labels, 0.15, 0.2, seed=2, image_size=None)
    assert not np.array_equal(a["y_test"], c["y_test"])


def test_layouts_are_normalised_to_nchw_float():
    labels = np.arange(12) % 3
    hw = np.zeros((12, 5, 6), dtype=np.uint8) + 255
    x, y = check_arrays(hw, labels, "s")
    assert x.shape == (12, 1, 5, 6) and x.dtype == np.float32 and x.max() == 1.0
    assert y.dtype == np.int64
    x, _ = check_arrays(np.zeros((12, 5, 6, 3), dtype=np.float32), labels, "s")
    assert x.shape == (12, 3, 5, 6)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((12, 8, 8)), np.zeros(12, dtype=np.float32), "'labels' must be 1-D integers"),
        (np.zeros((12, 8, 8)), np.zeros((12, 2), dtype=int), "'labels' must be 1-D integers"),
        (np.zeros((12,)), np.arange(12) % 2, "'images' must be"),
        (np.zeros((12, 8, 8, 8, 8)), np.arange(12) % 2, "'images' must be"),
        (np.zeros((12, 8, 8)), np.arange(11) % 2, "12 images but 11 labels"),
        (np.full((12, 8, 8), np.nan), np.arange(12) % 2, "NaN"),
        (np.array([["a"] * 8] * 12), np.arange(12) % 2, "must be numeric"),
        (np.zeros((12, 8, 8)), np.zeros(12, dtype=int), "at least 2 classes"),
    ],
)
def test_bad_arrays_fail_with_one_line_naming_the_source(images, labels, message):
    with pytest.raises(DataError) as err:
        check_arrays(images, labels, "data/01_raw/mine.npz")
    assert message in str(err.value)
    assert str(err.value).startswith("data/01_raw/mine.npz: ")
    assert "\n" not in str(err.value)


def test_calibration_samples_come_from_train_split_and_are_fixed(splits: Splits):
    a, b = calibration_samples(splits, 32), calibration_samples(splits, 32)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 32
    train = {x.tobytes() for x in splits.x("train")}
    assert all(x.tobytes() in train for x in a)


def test_features_are_checked_like_images():
    x, y = check_features(np.arange(24).reshape(12, 2), np.arange(12) % 2, "s")
    assert x.dtype == np.float32 and y.dtype == np.int64
    for features, labels, message in [
        (np.zeros((12, 2, 2)), np.arange(12) % 2, "'features' must be (N, F)"),
        (np.array([["a", "b"]] * 12), np.arange(12) % 2, "must be numeric"),
        (np.full((12, 2), np.inf), np.arange(12) % 2, "NaN or infinite"),
        (np.zeros((12, 2)), np.arange(12) % 2 + 0.5, "'labels' must be 1-D integers"),
        (np.zeros((9, 2)), np.arange(9) % 2, "only 9 samples"),
        (np.zeros((12, 2)), np.arange(11) % 2, "12 rows but 11 labels"),
    ]:
        with pytest.raises(DataError, match=re.escape(message)):
            check_features(features, labels, "data/01_raw/t.csv")


def test_split_dataset_standardises_features_with_training_statistics_only():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    features = rng.normal(5.0, 3.0, size=(200, 6)) + labels[:, None]
    features[:, 2] = 7.0  # a constant column: std 1, not a division by zero
    params = {"seed": 3, "val_fraction": 0.15, "test_fraction": 0.2, "image_size": 32}
    out = split_dataset({"features": features, "labels": labels}, params)
    raw = split_arrays(features.astype(np.float32), labels, 0.15, 0.2, seed=3, image_size=None)
    np.testing.assert_allclose(out["feature_mean"], raw["x_train"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(out["feature_std"][[0, 1, 3]], raw["x_train"].std(0)[[0, 1, 3]], rtol=1e-5)
    assert out["feature_std"][2] == 1.0
    for split in ("train", "val", "test"):  # same rows, same order, same transform on every split
        assert out[f"x_{split}"].shape == raw[f"x_{split}"].shape and out[f"x_{split}"].dtype == np.float32
        np.testing.assert_array_equal(out[f"y_{split}"], raw[f"y_{split}"])
        np.testing.assert_allclose(
            out[f"x_{split}"], (raw[f"x_{split}"] - out["feature_mean"]) / out["feature_std"], atol=1e-5
        )
    np.testing.assert_allclose(out["x_train"][:, [0, 1, 3]].mean(0), 0, atol=1e-5)
    assert abs(out["x_test"].mean()) > 1e-3  # the test split did not take part in the fit
    splits = Splits(out)  # the extra arrays don't disturb the model input
    assert splits.input_shape == (1, 6) and splits.num_classes == 4


def test_split_dataset_needs_images_or_features():
    with pytest.raises(DataError, match="'images' or 'features', and 'labels'"):
        split_dataset({"table": np.zeros((20, 3)), "labels": np.arange(20) % 2}, {})


def test_masks_become_the_targets_resized_by_nearest_neighbour_and_bad_ones_are_named():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 1, 8, 8), dtype=np.uint8)
    labels = np.arange(60) % 3
    masks = np.zeros((60, 8, 8), np.uint8)
    masks[:, 2:6, 2:6] = (labels + 1)[:, None, None]  # a square of the image's class on background
    params = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.3, "image_size": 16}
    out = split_dataset({"images": images, "labels": labels, "masks": masks}, params)
    splits = Splits(out)
    assert splits.task is Task.DENSE and splits.num_classes == 4
    y = splits.y("test")
    assert y.shape == (len(out["index_test"]), 16, 16)
    expected = np.zeros((len(y), 16, 16), np.uint8)
    expected[:, 4:12, 4:12] = (labels[out["index_test"]] + 1)[:, None, None]
    assert np.array_equal(y, expected)  # nearest: no blended class ids at the square's edges
    with pytest.raises(DataError, match="raw_images: 'masks' must be .*matching the images"):
        split_dataset({"images": images, "labels": labels, "masks": masks[:, :4]}, params)
