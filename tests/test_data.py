import numpy as np
import pytest

from kedro_edge.data import Splits, calibration_samples, check_arrays, load_digits_arrays, split_arrays
from kedro_edge.errors import DataError


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
