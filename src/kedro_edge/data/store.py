"""Images that stay on disk: a compact pixel store read in batches.

A data set is one ``(N, C, H, W)`` array of ``uint8`` pixels (or ``float32`` when the user's
images are floats), memory-mapped, so reading it costs page cache (file-backed, reclaimable),
not the process's own memory. The splits are index lists over it. Every consumer gets a
``StoredImages`` view: indexing it reads just those rows, scales them to [0, 1] and applies the
input contract, so only the batch asked for is ever a float copy.

Perturbed copies (``evaluation.robustness``) are views too: ``perturbed_view`` draws the same
perturbation for a block of ``BLOCK`` rows whatever the batch that reads it, and the in-memory
path (``perturb_blocks``) draws the very same values, so streamed and in-memory runs agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kedro_edge.data.preprocessing import Preprocessing, prepare

CHUNK = 1024  # rows per read or write when a whole store is copied or resized
BLOCK = 256  # rows that share one perturbation draw (see the module docstring)

# (a block of prepared float32 rows, its block number) -> the block as evaluated
BlockFn = Callable[[np.ndarray, int], np.ndarray]


class StoredImages:
    """A lazy ``(n, C, H, W)`` float32 view of ``rows`` of a pixel store.

    ``view[i]``, ``view[a:b]`` and ``view[index_array]`` read those rows only; ``np.asarray(view)``
    reads them all (for small data and tests). ``scale`` turns stored pixels into [0, 1]
    (1/255 for uint8); ``contract`` then prepares them as the model expects.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(
        self,
        pixels: np.ndarray,
        rows: np.ndarray | None = None,
        contract: Preprocessing | None = None,
        scale: float = 1 / 255,
        block_fn: BlockFn | None = None,
    ) -> None:
        self._pixels = pixels
        self._rows = np.arange(len(pixels)) if rows is None else np.asarray(rows, dtype=np.int64)
        self._contract, self._scale, self._block_fn = contract, scale, block_fn
        self._cached: tuple[int, np.ndarray] | None = None  # the last block a block_fn made
        one = self._prepare(np.asarray(pixels[:1])) if len(pixels) else np.zeros((1, *pixels.shape[1:]))
        self.shape = (len(self._rows), *one.shape[1:])

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return self[np.array([key])][0]
        positions = np.arange(len(self._rows))[key]
        if self._block_fn is None:
            return self._read(self._rows[positions])
        return self._blocks(positions)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """The rows in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]

    def map_blocks(self, block_fn: BlockFn) -> StoredImages:
        """The same rows, each aligned block of ``BLOCK`` rows passed through ``block_fn``."""
        return StoredImages(self._pixels, self._rows, self._contract, self._scale, block_fn)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the store, read in ascending order (disk locality), returned in the order asked."""
        if len(rows) > 1 and np.any(np.diff(rows) < 0):
            order = np.argsort(rows, kind="stable")
            raw = np.empty((len(rows), *self._pixels.shape[1:]), dtype=self._pixels.dtype)
            raw[order] = self._pixels[rows[order]]
        else:
            raw = np.asarray(self._pixels[rows])
        return self._prepare(raw)

    def _prepare(self, raw: np.ndarray) -> np.ndarray:
        unit = raw.astype(np.float32) * np.float32(self._scale) if self._scale != 1 else raw.astype(np.float32)
        return unit if self._contract is None else prepare(unit, self._contract)

    def _blocks(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.float32)
        for block in np.unique(positions // BLOCK):
            made = self._block(int(block))
            hit = positions // BLOCK == block
            out[hit] = made[positions[hit] - block * BLOCK]
        return out

    def _block(self, block: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != block:
            rows = self._rows[block * BLOCK : (block + 1) * BLOCK]
            assert self._block_fn is not None
            self._cached = (block, self._block_fn(self._read(rows), block))
        return self._cached[1]


def map_blocks(x: np.ndarray | StoredImages, block_fn: BlockFn) -> np.ndarray | StoredImages:
    """``block_fn`` over aligned blocks of ``BLOCK`` rows: a lazy view of a store, or an array
    with the very same values (the in-memory path)."""
    if isinstance(x, StoredImages):
        return x.map_blocks(block_fn)
    parts = [block_fn(np.asarray(x[s : s + BLOCK]), s // BLOCK) for s in range(0, len(x), BLOCK)]
    return np.concatenate(parts) if parts else np.asarray(x, dtype=np.float32).copy()


class Resized:
    """``pixels`` resized (bilinear) to ``size`` square, chunk by chunk when sliced: what the split
    writes when the raw images are not yet the model's size."""

    def __init__(self, pixels: np.ndarray, size: int) -> None:
        self._pixels, self._size = pixels, size
        self.shape = (len(pixels), pixels.shape[1], size, size)
        self.dtype = pixels.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        chunk = torch.from_numpy(np.asarray(self._pixels[key], dtype=np.float32))
        out = F.interpolate(chunk, size=(self._size, self._size), mode="bilinear", align_corners=False).numpy()
        if self.dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(self.dtype)


def resized(pixels: np.ndarray, size: int | None) -> np.ndarray | Resized:
    """``pixels`` at ``size`` square: themselves when already so (or ``size`` is None), else lazily."""
    if size is None or pixels.shape[-2:] == (size, size):
        return pixels
    return Resized(pixels, size)


def open_store(path: Any) -> np.ndarray:
    """The ``.npy`` store at ``path``, memory-mapped read-only."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def fingerprint(pixels: np.ndarray) -> str:
    """A cheap identity of a store's content: its shape, dtype and first, middle and last rows,
    so a ``splits.npz`` never pairs with an ``images.npy`` of another split run."""
    import hashlib

    digest = hashlib.sha256(f"{tuple(pixels.shape)}{pixels.dtype}".encode())
    for row in sorted({0, len(pixels) // 2, len(pixels) - 1}):
        if 0 <= row < len(pixels):
            digest.update(np.ascontiguousarray(pixels[row]).tobytes())
    return digest.hexdigest()[:16]
