"""Datasets for images and labels: the bundled glyphs and digits, and ``.npz`` files.

The raw loaders return ``{"images": (N, C, H, W), "labels": (N,) int64}``, ``uint8`` pixels
kept as they are (or float32 in [0, 1]), already checked by ``kedro_edge.data.check_images``
so bad input fails where it enters. Image folders: ``kedro_edge.io.image_folder``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from kedro.io import AbstractDataset

from kedro_edge.data import check_images, check_masks, load_digits_arrays
from kedro_edge.data.glyphs import CLASSES, GlyphSpec, generate, generate_masks
from kedro_edge.errors import DataError
from kedro_edge.io.base import FileDataset
from kedro_edge.progress import progress_bar


class NpzDataset(FileDataset):
    """A dict of named numpy arrays in one ``.npz`` file (no pickled objects)."""

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def _write(self, data: dict[str, np.ndarray], path: Path) -> None:
        with open(path, "wb") as fh:  # a file handle: np.savez would append ".npz" to a name
            np.savez(fh, **data)


class ImageNpzDataset(NpzDataset):
    """Your own data: a ``.npz`` with an images array and an integer labels array (read-only)."""

    def __init__(
        self,
        filepath: str,
        images_key: str = "images",
        labels_key: str = "labels",
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._keys = (images_key, labels_key)

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        arrays = super()._read(path)
        missing = [k for k in self._keys if k not in arrays]
        if missing:
            raise DataError(f"{path}: no array named '{missing[0]}' (has: {', '.join(arrays) or 'none'})")
        images, labels = check_images(arrays[self._keys[0]], arrays[self._keys[1]], str(path))
        return {"images": images, "labels": labels}

    def save(self, data: Any) -> None:
        raise DataError(f"{self._filepath}: ImageNpzDataset is read-only (raw data)")


class DigitsDataset(AbstractDataset):
    """scikit-learn's bundled 8x8 handwritten digits: the default data, shipped with the package."""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"source": "sklearn.datasets.load_digits"}

    def load(self) -> dict[str, np.ndarray]:
        images, labels = check_images(*load_digits_arrays(), "sklearn digits")
        return {"images": images, "labels": labels}

    def save(self, data: Any) -> None:
        raise DataError("DigitsDataset is read-only (bundled data)")


class GlyphsDataset(NpzDataset):
    """The bundled default task (``kedro_edge.data.glyphs``), generated once into ``filepath``.

    The first load renders the images (a rich progress bar; ~7 s for 20,000) and writes them
    with the spec that made them; later loads read the file. A file whose recorded spec
    differs from the catalog's is regenerated, so editing the catalog never serves stale
    data. Read-only for pipelines: ``save`` refuses. ``masks`` adds a per-pixel mask to each
    image (the segmentation task: ``kedro run --env segmentation``): ``strokes`` marks the letter's
    strokes 1 and everything else (paper, clutter) 0; ``letters`` marks them with the letter's class
    + 1 (11 classes).
    """

    def __init__(
        self,
        filepath: str,
        n_per_class: int = 2000,
        size: int = 32,
        seed: int = 0,
        severity: float = 1.0,
        masks: Literal["strokes", "letters"] | None = None,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        if n_per_class < 1 or size < 8 or severity < 0:
            raise DataError(f"{filepath}: GlyphsDataset needs n_per_class >= 1, size >= 8, severity >= 0")
        if masks not in (None, "strokes", "letters"):
            raise DataError(
                f"{filepath}: GlyphsDataset 'masks' must be strokes, letters or null, got {masks!r}"
            )
        self._spec = GlyphSpec(n_per_class=n_per_class, size=size, seed=seed, severity=severity)
        self._masks = masks

    def _recorded(self) -> dict[str, Any]:
        """What the file records it was made from (the spec, and ``masks`` when they are in it)."""
        return {**self._spec.to_json(), **({"masks": self._masks} if self._masks else {})}

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), **self._recorded()}

    def load(self) -> dict[str, np.ndarray]:
        arrays = self._cached()
        if arrays is None:
            arrays = _generate_with_progress(self._spec, self._masks)
            spec = np.asarray(json.dumps(self._recorded(), sort_keys=True))
            super().save({**arrays, "spec": spec})  # write-then-rename
        source = str(self._filepath)
        images, labels = check_images(arrays["images"], arrays["labels"], source)
        if self._masks:
            masks = check_masks(arrays["masks"], images, source)
            return {
                "images": images,
                "labels": labels,
                "masks": (masks > 0).view(np.uint8) if self._masks == "strokes" else masks,
            }
        return {"images": images, "labels": labels}

    def _cached(self) -> dict[str, np.ndarray] | None:
        """The file's arrays if it exists, reads and was made by this spec; else None."""
        try:
            with self._location.readable() as path:
                arrays = self._read(path)
            return arrays if json.loads(str(arrays["spec"])) == self._recorded() else None
        except Exception:  # missing, unreadable or from another generator: generate afresh
            return None

    def save(self, data: Any) -> None:
        raise DataError(f"{self._filepath}: GlyphsDataset is read-only (generated data)")


def _generate_with_progress(spec: GlyphSpec, masks: bool = False) -> dict[str, np.ndarray]:
    with progress_bar() as bar:
        task = bar.add_task("generate glyphs", total=spec.n_per_class * len(CLASSES), status="")

        def track(indices):
            for i in indices:
                yield i
                bar.advance(task)

        if masks:
            images, stroke_masks, labels = generate_masks(spec, track)
            return {"images": images, "labels": labels, "masks": stroke_masks}
        images, labels = generate(spec, track)
        return {"images": images, "labels": labels}
