"""The input contract: how raw pixels become what the model was trained on.

``data.preprocessing`` is recorded where the splits are made and applied to every batch read
from the pixel store (``kedro_edge.data.store``): every consumer (training, calibration,
evaluation, robustness, the device parity batch) reads prepared inputs, so a model trained on
normalised inputs cannot be evaluated without them. The contract
is kept beside the arrays (``model_input["preprocessing"]``) and travels with the model: as
ONNX metadata (``METADATA_KEY``) and, with ``bake: true``, as the graph's first nodes, so a
device app feeds raw ``uint8`` pixels.

Raw images arrive as (N, C, H, W) in [0, 1] (pixel / 255), already resized to
``data.image_size``; then: centre ``crop``, ``channels`` (1 <-> 3), channel ``order``, and
``(pixel * scale - mean) / std`` with pixel in 0..255.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from kedro_edge.errors import ConfigError
from kedro_edge.schema import Strict

METADATA_KEY = "kedro-edge.preprocessing"  # the ONNX model's metadata_props entry
KEY = "data.preprocessing"  # where the contract is set
ARRAY_KEY = "preprocessing"  # model_input's entry: the contract as a JSON string
# images and a teacher trained elsewhere: its inputs must be said, never assumed
NEEDED_BY_GIVEN_TEACHER = (
    f"parameter '{KEY}': the teacher is given (model.checkpoint or model.onnx), so say how its "
    "inputs were prepared (mean, std, scale, ...; `preprocessing: {}` for pixels / 255 as they are)"
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, RGB -> gray


class Preprocessing(Strict):
    """``data.preprocessing``: what the model expects, from raw 0..255 pixels."""

    crop: int | None = Field(None, ge=1)  # centre crop to this square size, after image_size
    channels: Literal[1, 3] | None = None  # convert to this many channels; null keeps the data's
    order: Literal["rgb", "bgr"] = "rgb"  # the channel order the model was trained on
    scale: float = Field(1 / 255, gt=0)  # raw 0..255 pixel values times this ...
    mean: list[float] = Field(default_factory=lambda: [0.0])  # ... minus mean (one per channel, or one)
    std: list[float] = Field(default_factory=lambda: [1.0])  # ... over std
    layout: Literal["nchw", "nhwc"] = "nchw"  # of the baked uint8 input (the model stays NCHW)
    bake: bool = False  # the steps above become model.onnx's first nodes: it takes uint8 pixels

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value

    def per_channel(self, name: str, channels: int) -> np.ndarray:
        """``mean`` or ``std`` as a (1, C, 1, 1) array for ``channels``, or a ``ConfigError``."""
        values = getattr(self, name)
        if len(values) not in (1, channels):
            raise ConfigError(
                f"parameter '{KEY}.{name}': {len(values)} values for {channels}-channel images"
            )
        return np.broadcast_to(np.asarray(values, np.float32), (channels,)).reshape(1, channels, 1, 1)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        return cls.model_validate_json(text)


def prepare(images: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Images in [0, 1] (N, C, H, W) -> the model's inputs: crop, channels, order, normalise."""
    x = images
    if p.crop is not None:
        h, w = x.shape[-2:]
        if p.crop > min(h, w):
            raise ConfigError(f"parameter '{KEY}.crop': {p.crop} is larger than the {h}x{w} images")
        top, left = (h - p.crop) // 2, (w - p.crop) // 2
        x = x[..., top : top + p.crop, left : left + p.crop]
    if p.channels == 3 and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    elif p.channels == 1 and x.shape[1] == 3:
        x = np.tensordot(x, _LUMA, axes=([1], [0]))[:, None]
    elif p.channels is not None and x.shape[1] != p.channels:
        raise ConfigError(
            f"parameter '{KEY}.channels': cannot turn {x.shape[1]}-channel images into {p.channels}"
        )
    if p.order == "bgr":
        x = x[:, ::-1]
    return normalise(x, p)


def normalise(unit: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Pixels in [0, 1], already cropped and ordered -> ``(pixel * scale - mean) / std``."""
    c = unit.shape[1]
    pixels = unit.astype(np.float32) * 255.0
    return ((pixels * p.scale - p.per_channel("mean", c)) / p.per_channel("std", c)).astype(np.float32)


def to_unit(x: np.ndarray, p: Preprocessing) -> np.ndarray:
    """The model's inputs back to pixels in [0, 1] (what robustness perturbs)."""
    c = x.shape[1]
    return ((x * p.per_channel("std", c) + p.per_channel("mean", c)) / p.scale / 255.0).astype(np.float32)


def to_pixels(x: np.ndarray, p: Preprocessing) -> np.ndarray:
    """The model's inputs back to the raw ``uint8`` pixels a baked model takes, in its layout."""
    pixels = np.clip(np.rint(to_unit(x, p) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1) if p.layout == "nhwc" else pixels)


def of_arrays(arrays: dict[str, np.ndarray]) -> Preprocessing | None:
    """The contract kept in ``model_input``, if any."""
    text = arrays.get(ARRAY_KEY)
    return None if text is None else Preprocessing.from_json(str(text))
