"""Classification data: checks, the bundled default, splits and batches.

Raw images arrive as ``images`` (N, C, H, W) ``uint8`` pixels or float32 in [0, 1] (often a
memory-mapped store, ``kedro_edge.data.store``), or ``features`` (N, F) float32 for tabular
data, with ``labels`` (N,) int64. Every loader calls ``check_images``, ``check_arrays`` or
``check_features`` so bad input fails where it enters, naming its source.

The model input of images is the pixel store plus index lists (``index_train``, ...): ``Splits.x``
is then a ``StoredImages`` view that reads and prepares a batch at a time. Small in-memory
arrays (``x_train``, ...: feature vectors, tests) work through the same ``Splits``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.model_selection import train_test_split

from kedro_edge.data.preprocessing import Preprocessing, of_arrays
from kedro_edge.data.store import StoredImages
from kedro_edge.data.task import Task, task_of
from kedro_edge.errors import DataError
from kedro_edge.schema import Strict


class DataParams(Strict):
    seed: int = 42
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    image_size: int | None = Field(32, ge=4, le=512)  # resize (bilinear); null keeps the size
    # the input contract (kedro_edge.data.preprocessing); null: pixels / 255 as they are
    preprocessing: Preprocessing | None = None


SPLITS = ("train", "val", "test")
PIXELS = "pixels"  # model_input's pixel store (N, C, H, W), memory-mapped; never inside splits.npz
PIXEL_SCALE = "pixel_scale"  # stored pixel -> [0, 1]: 1/255 for uint8, 1 for float stores
TASK = "task"  # the targets' task (``kedro_edge.data.task``) when ``y_*`` are not class ids


def _to_nchw(images: np.ndarray, source: str) -> np.ndarray:
    if images.dtype.kind not in "uif" or images.dtype.kind == "b":
        raise DataError(f"{source}: 'images' must be numeric, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 2, 3, 4) and images.shape[-1] in (1, 3, 4):
        images = np.moveaxis(images, -1, 1)
    if images.ndim != 4 or images.shape[1] > 4:
        raise DataError(
            f"{source}: 'images' must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {images.shape}"
        )
    return images


def check_images(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` checked without a copy of the images: (N, C, H, W) views of ``uint8``
    pixels (kept as they are) or of floats in [0, 1] (as float32, checked finite chunk by chunk)."""
    images = _to_nchw(images if isinstance(images, np.ndarray) else np.asarray(images), source)
    labels = _check_labels(np.asarray(labels), len(images), "images", source)
    if images.dtype == np.uint8:
        return images, labels
    if images.dtype.kind in "iu":  # other integer pixels: 0..255 as uint8 (a copy, once)
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"{source}: integer 'images' must be pixels in 0..255, got {images.min()}..{images.max()}")
        return images.astype(np.uint8), labels
    for start in range(0, len(images), 4096):
        if not np.isfinite(images[start : start + 4096]).all():
            raise DataError(f"{source}: 'images' contains NaN or infinite values")
    return (images if images.dtype == np.float32 else images.astype(np.float32)), labels


def check_masks(masks: np.ndarray, images: np.ndarray, source: str) -> np.ndarray:
    """Per-pixel class ids (N, H, W) for the (N, C, H, W) ``images``, as ``uint8``; or a ``DataError``."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype.kind not in "iu" or masks.shape != (len(images), *images.shape[2:]):
        raise DataError(
            f"{source}: 'masks' must be (N, H, W) integer class ids matching the images "
            f"{(len(images), *images.shape[2:])}, got dtype {masks.dtype} shape {masks.shape}"
        )
    if masks.min() < 0 or masks.max() > 255:
        raise DataError(f"{source}: 'masks' class ids must be 0..255, got {masks.min()}..{masks.max()}")
    return masks.astype(np.uint8)


def resized_masks(masks: np.ndarray, size: int | None) -> np.ndarray:
    """Masks at ``size`` square by nearest neighbour (class ids never blend)."""
    if size is None or masks.shape[-2:] == (size, size):
        return masks
    t = torch.from_numpy(np.ascontiguousarray(masks)[:, None]).float()
    return F.interpolate(t, size=(size, size), mode="nearest")[:, 0].to(torch.uint8).numpy()


def check_arrays(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` as (N, C, H, W) float32 and (N,) int64, or raise ``DataError``.

    Accepts (N, H, W), (N, C, H, W) with C in 1..4, and (N, H, W, C); integer images are
    scaled by 1/255.
    """
    images, labels = _to_nchw(np.asarray(images), source), np.asarray(labels)
    labels = _check_labels(labels, len(images), "images", source)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise DataError(f"{source}: 'images' contains NaN or infinite values")
    scale = 1 / 255 if images.dtype.kind in "iu" else 1.0
    return (images * scale).astype(np.float32), labels


def _check_labels(labels: np.ndarray, n: int, what: str, source: str) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{source}: 'labels' must be 1-D integers, got dtype {labels.dtype} shape {labels.shape}"
        )
    if n != len(labels):
        raise DataError(f"{source}: {n} {what} but {len(labels)} labels")
    if len(labels) < 10:
        raise DataError(f"{source}: only {len(labels)} samples; need at least 10")
    if labels.min() < 0 or len(np.unique(labels)) < 2:
        raise DataError(f"{source}: 'labels' must be non-negative class ids of at least 2 classes")
    return labels.astype(np.int64)


def check_features(features: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features, labels)`` as (N, F) float32 and (N,) int64, or raise ``DataError``."""
    features, labels = np.asarray(features), np.asarray(labels)
    if features.dtype.kind not in "uif":
        raise DataError(f"{source}: 'features' must be numeric, got dtype {features.dtype}")
    if features.ndim != 2 or features.shape[1] < 1:
        raise DataError(f"{source}: 'features' must be (N, F), got shape {features.shape}")
    labels = _check_labels(labels, len(features), "rows", source)
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise DataError(f"{source}: 'features' contains NaN or infinite values")
    return features, labels


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no download)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def split_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    image_size: int | None,
) -> dict[str, np.ndarray]:
    """Stratified train/val/test split with a fixed seed; images optionally resized to a square size."""
    if image_size is not None and images.ndim == 4 and images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(
            torch.from_numpy(images),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
        ).numpy()
    out = {}
    for name, part in split_indices(labels, val_fraction, test_fraction, seed).items():
        out[f"x_{name}"] = np.ascontiguousarray(images[part])
        out[f"y_{name}"] = labels[part]
    return out


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test index lists (ascending within each split)."""
    idx = np.arange(len(labels))
    stratify = labels if np.bincount(labels).min() >= 3 else None
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    val_share = val_fraction / (1 - test_fraction)
    rest_strat = labels[rest] if stratify is not None else None
    train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=rest_strat)
    return {name: part for name, part in zip(SPLITS, (train, val, test), strict=True)}


def standardise(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Features scaled by the training split's mean and standard deviation, fitted on train only.

    A constant feature gets std 1. The fitted ``feature_mean`` and ``feature_std`` join the
    arrays: an application applies ``(x - feature_mean) / feature_std`` before the model.
    """
    train = arrays["x_train"].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    out = dict(arrays)
    for name in SPLITS:
        out[f"x_{name}"] = ((arrays[f"x_{name}"] - mean) / std).astype(np.float32)
    out["feature_mean"], out["feature_std"] = mean.astype(np.float32), std.astype(np.float32)
    return out


@dataclass(frozen=True)
class Splits:
    """The model input: train/val/test arrays plus what models need to know about them."""

    arrays: dict[str, np.ndarray]

    def x(self, split: str) -> np.ndarray:
        """The split's model inputs: an array, or a ``StoredImages`` view read batch by batch."""
        if f"x_{split}" in self.arrays or PIXELS not in self.arrays:
            return self.arrays[f"x_{split}"]
        scale = float(self.arrays.get(PIXEL_SCALE, 1 / 255))
        return StoredImages(self.arrays[PIXELS], self.arrays[f"index_{split}"], self.preprocessing, scale)

    @property
    def streamed(self) -> bool:
        """Whether the images are a store on disk (read batch by batch), not arrays in memory."""
        return PIXELS in self.arrays and "x_train" not in self.arrays

    def in_memory(self) -> Splits:
        """Every split as a prepared float32 array (small data: benchmarks, tests)."""
        return self.subset({s: np.arange(len(self.y(s))) for s in SPLITS})

    def subset(self, picks: dict[str, np.ndarray]) -> Splits:
        """In-memory splits of the rows ``picks[split]`` of each split (a quick check's slice)."""
        kept = {k: v for k, v in self.arrays.items() if not k.startswith(("x_", "y_", "index_")) and k != PIXELS}
        for split, pick in picks.items():
            kept[f"x_{split}"] = np.asarray(self.x(split)[pick])
            kept[f"y_{split}"] = self.y(split)[pick]
        kept.pop(PIXEL_SCALE, None)
        return Splits(kept)

    def y(self, split: str) -> np.ndarray:
        return self.arrays[f"y_{split}"]

    @property
    def task(self) -> Task:
        """What the targets are: class ids (classification), masks (dense), ..."""
        if TASK in self.arrays:
            return Task(str(self.arrays[TASK]))
        return task_of(self.y("train"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape with a batch axis of 1, e.g. (1, 1, 32, 32)."""
        return (1, *self.x("train").shape[1:])

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The input contract the arrays were prepared with (``data.preprocessing``), if any."""
        return of_arrays(self.arrays)

    @property
    def num_classes(self) -> int:
        return int(max(self.y(s).max() for s in SPLITS)) + 1

    def example(self) -> torch.Tensor:
        return torch.from_numpy(self.x("train")[:1])


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield tensor mini-batches; a seeded permutation when shuffling, so runs repeat."""
    order = np.random.default_rng(seed).permutation(len(y)) if shuffle else np.arange(len(y))
    for start in range(0, len(y), batch_size):
        part = order[start : start + batch_size]
        yield torch.from_numpy(x[part]), torch.from_numpy(y[part])


def calibration_samples(splits: Splits, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, seeded subset of the training images for quantization calibration."""
    x = splits.x("train")
    pick = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    return x[np.sort(pick)]
