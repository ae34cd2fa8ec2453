"""data.preprocessing: the input contract applied to the splits, and undone for pixels."""

from __future__ import annotations

import numpy as np
import pytest

from kedro_edge.data import Splits
from kedro_edge.data.preprocessing import Preprocessing, prepare, to_pixels, to_unit
from kedro_edge.errors import ConfigError
from kedro_edge.nodes import split_dataset

RAW = np.random.default_rng(0).integers(0, 256, size=(40, 1, 10, 10), dtype=np.uint8)
LABELS = np.arange(40) % 4
CONTRACT = Preprocessing(crop=8, channels=3, order="bgr", mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])


def test_crop_channels_order_and_normalisation():
    x = prepare(RAW / 255.0, CONTRACT)
    assert x.shape == (40, 3, 8, 8) and x.dtype == np.float32
    centre = RAW[:, 0, 1:9, 1:9] / 255.0
    for c, (mean, std) in enumerate(zip(CONTRACT.mean, CONTRACT.std, strict=True)):
        assert np.allclose(x[:, c], (centre - mean) / std, atol=1e-5)  # gray repeated: order is moot


def test_bgr_reverses_the_channels_the_model_sees():
    rgb = np.stack([np.zeros((2, 4, 4)), np.ones((2, 4, 4)) * 0.5, np.ones((2, 4, 4))], axis=1)
    x = prepare(rgb, Preprocessing(order="bgr"))
    assert np.allclose(x[:, 0], 1.0) and np.allclose(x[:, 2], 0.0)


def test_pixels_come_back_exactly_in_the_baked_layout():
    p = CONTRACT.model_copy(update={"layout": "nhwc", "crop": None, "order": "rgb"})
    x = prepare(RAW / 255.0, p)
    pixels = to_pixels(x, p)
    assert pixels.dtype == np.uint8 and pixels.shape == (40, 10, 10, 3)
    assert np.array_equal(pixels[..., 0], RAW[:, 0]) and np.array_equal(pixels[..., 2], RAW[:, 0])
    assert np.allclose(to_unit(x, p)[:, :1], RAW / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    ("contract", "needle"),
    [
        (Preprocessing(mean=[0.1, 0.2]), "parameter 'data.preprocessing.mean': 2 values for 1-channel images"),
        (Preprocessing(crop=12), "parameter 'data.preprocessing.crop': 12 is larger than the 10x10 images"),
    ],
)
def test_a_contract_that_does_not_fit_the_images_names_the_key(contract, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        prepare(RAW / 255.0, contract)


def test_std_must_be_positive():
    with pytest.raises(ValueError, match="every std must be > 0"):
        Preprocessing(std=[0.0])


def test_the_split_node_prepares_every_split_and_keeps_the_contract():
    params = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "image_size": None,
              "preprocessing": CONTRACT.model_dump()}  # fmt: skip
    out = split_dataset({"images": RAW, "labels": LABELS}, params)
    assert out["pixels"].dtype == np.uint8 and out["pixels"].shape[1:] == (1, 10, 10)  # kept raw
    for split in ("train", "val", "test"):
        assert Splits(out).x(split).shape[1:] == (3, 8, 8)  # prepared as read
    assert Preprocessing.from_json(str(out["preprocessing"])) == CONTRACT
    plain = split_dataset({"images": RAW, "labels": LABELS}, {**params, "preprocessing": None})
    assert "preprocessing" not in plain and Splits(plain).x("test").shape[1:] == (1, 10, 10)
