"""Tabular data: feature vectors with an integer label, from a ``.csv`` or a ``.npz`` file.

Returns ``{"features": (N, F) float32, "labels": (N,) int64}``, checked by
``kedro_edge.data.check_features``; the training pipeline standardises the features with
statistics fitted on the training split. Read with the standard library's ``csv`` module
and numpy (no pandas).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.data import check_features
from kedro_edge.errors import DataError
from kedro_edge.io.arrays import NpzDataset


class TabularDataset(NpzDataset):
    """Your own tabular data (read-only): one row per sample, one integer class label each.

    ``.csv``: a header row names the columns; ``label`` is the label column's name, and every
    other column is a feature unless ``features`` lists the ones to use (in that order).
    Every feature cell must be a finite number, every label an integer class id (``3``, not ``3.0``).

    ``.npz``: a 2-D features array and a 1-D integer labels array, under ``features_key``
    and ``labels_key``.

    Example (``conf/local/catalog.yml``)::

        raw_images:
          type: kedro_edge.io.TabularDataset
          filepath: data/01_raw/wine.csv
          label: target

    Args:
        filepath: a ``.csv`` or ``.npz`` file.
        label: the label column of a CSV file.
        features: CSV columns to use as features; ``None`` takes all but ``label``.
        features_key: the features array of a ``.npz`` file.
        labels_key: the labels array of a ``.npz`` file.
        delimiter: the CSV field separator.

    Raises:
        DataError: on load, one line naming the file (and the column or row) for a missing
            file or column, a non-numeric or empty cell, NaN, a non-integer label, or fewer
            than 10 rows.
    """

    def __init__(
        self,
        filepath: str,
        label: str = "label",
        features: Sequence[str] | None = None,
        features_key: str = "features",
        labels_key: str = "labels",
        delimiter: str = ",",
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._label, self._features = label, None if features is None else list(features)
        self._keys = (features_key, labels_key)
        self._delimiter = delimiter

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "label": self._label, "features": self._features}

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        if path.suffix.lower() == ".csv":
            features, labels = self._read_csv(path)
        elif path.suffix.lower() == ".npz":
            features, labels = self._read_npz(path)
        else:
            raise DataError(f"{path}: TabularDataset reads .csv or .npz files, not '{path.suffix}'")
        features, labels = check_features(features, labels, str(path))
        return {"features": features, "labels": labels}

    def _read_npz(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        arrays = super()._read(path)
        missing = [k for k in self._keys if k not in arrays]
        if missing:
            raise DataError(f"{path}: no array named '{missing[0]}' (has: {', '.join(arrays) or 'none'})")
        return arrays[self._keys[0]], arrays[self._keys[1]]

    def _read_csv(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's byte-order mark
            reader = csv.reader(fh, delimiter=self._delimiter)
            header = [name.strip() for name in next(reader, [])]
            rows = [row for row in reader if any(cell.strip() for cell in row)]
        if not header:
            raise DataError(f"{path}: empty file (expected a header row)")
        columns = self._features if self._features is not None else [c for c in header if c != self._label]
        for name in (self._label, *columns):
            if name not in header:
                raise DataError(f"{path}: no column named '{name}' (has: {', '.join(header)})")
        if not columns:
            raise DataError(f"{path}: no feature columns besides '{self._label}'")
        if self._label in columns:
            raise DataError(f"{path}: column '{self._label}' is the label; it cannot be a feature too")
        index, label = [header.index(name) for name in columns], header.index(self._label)
        features = np.empty((len(rows), len(index)), dtype=np.float64)
        labels = np.empty(len(rows), dtype=np.int64)
        for r, row in enumerate(rows):
            line = r + 2  # 1-based, after the header
            if len(row) != len(header):
                raise DataError(f"{path}: row {line} has {len(row)} fields, the header {len(header)}")
            features[r] = [_number(row[i], path, line, header[i]) for i in index]
            labels[r] = _class_id(row[label], path, line, self._label)
        return features, labels

    def save(self, data: Any) -> None:
        raise DataError(f"{self._filepath}: TabularDataset is read-only (raw data)")


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: row {line}, column '{column}': {cell.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: row {line}, column '{column}': {cell.strip()!r} is not a finite number")
    return value


def _class_id(cell: str, path: Path, line: int, column: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise DataError(
            f"{path}: row {line}, column '{column}': {cell.strip()!r} is not an integer class id"
        ) from None
