"""``model_input``: the splits as index lists in ``splits.npz``, over a pixel store beside it.

Images never become one float array: ``images.npy`` holds the pixels at the model's size
(``uint8`` as the data came, or float32) and is memory-mapped on load; ``splits.npz`` holds the
index lists, labels, the input contract and the store's fingerprint, so a ``splits.npz`` never
pairs with the ``images.npy`` of another run. Feature vectors (and small in-memory arrays) are
saved in ``splits.npz`` alone, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.data import PIXELS, store
from kedro_edge.errors import DataError
from kedro_edge.io.arrays import NpzDataset
from kedro_edge.io.atomic import atomic_write
from kedro_edge.progress import progress_bar

FINGERPRINT = "pixels_fingerprint"


class ModelInputDataset(NpzDataset):
    """``splits.npz`` plus its pixel store ``images_filepath`` (default: ``images.npy`` beside it).

    Saving writes the store first, ``store.CHUNK`` rows at a time with a progress bar, then the
    index lists; each file is replaced whole. Loading memory-maps the store and refuses one whose
    fingerprint is not the one ``splits.npz`` recorded.
    """

    def __init__(
        self,
        filepath: str,
        images_filepath: str | None = None,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._images = Path(images_filepath) if images_filepath else None

    def _images_path(self) -> Path:
        if not self._location.local:
            raise DataError(f"{self._filepath}: the pixel store must be a local file (it is memory-mapped)")
        return self._images or Path(self._location.path).with_name("images.npy")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "images_filepath": str(self._images or "images.npy")}

    def load(self) -> dict[str, Any]:
        arrays = super().load()
        if FINGERPRINT not in arrays:
            return arrays
        path = self._images_path()
        try:
            pixels = store.open_store(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the pixel store ({type(exc).__name__}: {exc})") from None
        if store.fingerprint(pixels) != str(arrays[FINGERPRINT]):
            raise DataError(
                f"{path}: does not belong to {self._filepath} (written by another split); run the split again"
            )
        return {**arrays, PIXELS: pixels}

    def save(self, data: dict[str, Any]) -> None:
        if PIXELS not in data:  # feature vectors: in splits.npz; an empty store keeps DVC's out
            if self._location.local:
                _write_store(self._images_path(), np.zeros((0,), np.float32))
            super().save(data)
            return
        pixels, rest = data[PIXELS], {k: v for k, v in data.items() if k != PIXELS}
        path = self._images_path()
        _write_store(path, pixels)
        rest[FINGERPRINT] = np.array(store.fingerprint(store.open_store(path)))
        super().save(rest)


def _write_store(path: Path, pixels: Any) -> None:
    """``pixels`` (an array, memmap or ``store.Resized``) copied into ``path`` chunk by chunk."""

    def fill(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=pixels.dtype, shape=tuple(pixels.shape))
        with progress_bar() as bar:
            task = bar.add_task(f"write {path.name}", total=len(pixels), status="")
            for start in range(0, len(pixels), store.CHUNK):
                out[start : start + store.CHUNK] = pixels[start : start + store.CHUNK]
                bar.advance(task, min(store.CHUNK, len(pixels) - start))
        out.flush()
        del out

    atomic_write(path, fill)
