"""A folder of image files, one sub-folder per class, decoded once into a pixel store.

Decoding runs on ``workers`` threads (Pillow releases the GIL while it decodes and resizes) with
a progress bar, straight into a memory-mapped ``uint8`` store, so a folder of any size costs disk,
not memory. The store is reused while the folder's listing (names and sizes), ``size`` and
``mode`` are unchanged. Unreadable files are counted and the first few named; the load stops
only when more than ``max_bad_fraction`` of the files are bad (default 0: any).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from fsspec.core import url_to_fs
from kedro.io import AbstractDataset

from kedro_edge.data import check_images, store
from kedro_edge.errors import DataError
from kedro_edge.io.atomic import atomic_write
from kedro_edge.progress import progress_bar

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
NAMED = 5  # unreadable files named in the message
PER_TASK = 64  # files one worker decodes per task


class ImageFolderDataset(AbstractDataset):
    """``<path>/<class name>/<image>``: sorted folder names give the class ids.

    Images are converted to ``mode`` ("L" grayscale or "RGB") and resized to ``size`` square.
    ``path`` may be an fsspec URL (``s3://bucket/images``) with ``credentials``/``fs_args``;
    ``store`` is the local ``.npy`` the pixels are decoded into (default: one per folder, size
    and mode under the system's temporary folder). Read-only.
    """

    def __init__(
        self,
        path: str,
        size: int = 32,
        mode: str = "L",
        store: str | None = None,
        workers: int | None = None,
        max_bad_fraction: float = 0.0,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("L", "RGB"):
            raise DataError(f"{path}: ImageFolderDataset mode must be 'L' or 'RGB', got {mode!r}")
        if not 0 <= max_bad_fraction < 1:
            raise DataError(
                f"{path}: ImageFolderDataset max_bad_fraction must be in [0, 1), got {max_bad_fraction}"
            )
        self._url, self._size, self._mode = str(path), size, mode
        self._fs, self._root = url_to_fs(str(path), **{**(credentials or {}), **(fs_args or {})})
        self._root = self._root.rstrip("/")
        self._workers = workers or os.cpu_count() or 1
        self._max_bad = max_bad_fraction
        key = hashlib.sha256(f"{self._url}|{size}|{mode}".encode()).hexdigest()[:12]
        self._store = (
            Path(store) if store else Path(tempfile.gettempdir()) / "kedro-edge-stores" / f"{key}.npy"
        )
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": self._url, "size": self._size, "mode": self._mode, "store": str(self._store)}

    def load(self) -> dict[str, np.ndarray]:
        files, labels, listing = self._list()
        manifest_path = self._store.with_suffix(".json")
        spec = {"source": self._url, "size": self._size, "mode": self._mode, "listing": listing}
        manifest = _read_json(manifest_path)
        if manifest is None or manifest.get("spec") != spec or not self._store.is_file():
            manifest = {"spec": spec, **self._decode(files, labels)}
            atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest)))  # the commit point
        if manifest["bad"]:
            log.warning(_bad_line(self._url, manifest["bad"], len(files)))
        pixels = store.open_store(self._store)
        images, kept = check_images(pixels, np.asarray(manifest["labels"], dtype=np.int64), self._url)
        return {"images": images, "labels": kept}

    def _list(self) -> tuple[list[str], list[int], str]:
        if not self._fs.isdir(self._root):
            raise DataError(f"{self._url}: image folder not found")
        folders = sorted(p.rstrip("/") for p in self._fs.ls(self._root, detail=False) if self._fs.isdir(p))
        files, labels, digest = [], [], hashlib.sha256()
        for label, folder in enumerate(folders):
            for entry in sorted(self._fs.ls(folder, detail=True), key=lambda e: e["name"]):
                name = entry["name"]
                if (
                    entry.get("type") == "directory"
                    or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES
                ):
                    continue
                files.append(name)
                labels.append(label)
                digest.update(f"{name[len(self._root) :]}|{entry.get('size')}\n".encode())
        if not files:
            raise DataError(f"{self._url}: no images in class folders")
        return files, labels, digest.hexdigest()

    def _decode(self, files: list[str], labels: list[int]) -> dict[str, Any]:
        """Decode every file into the store; the manifest's labels and unreadable files."""
        channels = 3 if self._mode == "RGB" else 1
        shape = (len(files), channels, self._size, self._size)
        bad: list[tuple[int, str]] = []

        def fill(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            with progress_bar() as bar, ThreadPoolExecutor(self._workers) as pool:
                task = bar.add_task(f"decode {len(files):,} images", total=len(files), status="")
                starts = range(0, len(files), PER_TASK)
                futures = [pool.submit(self._decode_into, out, files, s, s + PER_TASK) for s in starts]
                for future in as_completed(futures):
                    done, failed = future.result()
                    bad.extend(failed)
                    bar.update(task, advance=done, status=f"{len(bad)} unreadable" if bad else "")
            bad.sort()
            if len(bad) > self._max_bad * len(files):
                raise DataError(_bad_line(self._url, [why for _, why in bad], len(files)) + self._limit())
            if bad:
                _drop_rows(out, tmp, {i for i, _ in bad})
            else:
                out.flush()
            del out

        self._store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._store, fill)
        bad_rows = {i for i, _ in bad}
        return {
            "labels": [lab for i, lab in enumerate(labels) if i not in bad_rows],
            "bad": [why for _, why in bad],
        }

    def _decode_into(self, out: np.ndarray, files: list[str], start: int, stop: int) -> tuple[int, list]:
        from PIL import Image

        failed = []
        for i in range(start, min(stop, len(files))):
            try:
                with self._fs.open(files[i], "rb") as fh, Image.open(fh) as img:
                    img.draft(self._mode, (self._size, self._size))  # JPEG: decode at a reduced scale
                    pixels = np.asarray(img.convert(self._mode).resize((self._size, self._size)), np.uint8)
                out[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
            except (OSError, ValueError, SyntaxError) as exc:
                failed.append((i, f"{self._shown(files[i])}: not a readable image ({exc})"))
        return min(stop, len(files)) - start, failed

    def _shown(self, file: str) -> str:
        """``file`` as the user named its folder (their URL or path, not fsspec's internal form)."""
        return self._url.rstrip("/") + file[len(self._root) :]

    def _limit(self) -> str:
        return f"; more than max_bad_fraction {self._max_bad:g} of the files (set it to skip them)"

    def save(self, data: Any) -> None:
        raise DataError(f"{self._url}: ImageFolderDataset is read-only (raw data)")


def _bad_line(url: str, bad: list[str], total: int) -> str:
    named = "; ".join(bad[:NAMED]) + (f"; and {len(bad) - NAMED} more" if len(bad) > NAMED else "")
    return f"{url}: {len(bad)} of {total:,} files unreadable: {named}"


def _drop_rows(out: np.ndarray, tmp: Path, drop: set[int]) -> None:
    """Rewrite the store at ``tmp`` without the rows in ``drop`` (unreadable files), chunk by chunk."""
    keep = np.array([i for i in range(len(out)) if i not in drop], dtype=np.int64)
    compact_path = tmp.with_name(tmp.name + ".compact")
    compact = np.lib.format.open_memmap(
        compact_path, mode="w+", dtype=out.dtype, shape=(len(keep), *out.shape[1:])
    )
    for s in range(0, len(keep), store.CHUNK):
        compact[s : s + store.CHUNK] = out[keep[s : s + store.CHUNK]]
    compact.flush()
    del compact
    os.replace(compact_path, tmp)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
