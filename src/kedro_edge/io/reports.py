"""Datasets for reports: JSON figures and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from kedro_edge.io.base import FileDataset


class JsonDataset(FileDataset):
    """A JSON document, indented and key-ordered as written (readable in diffs and by DVC)."""

    def _read(self, path: Path) -> Any:
        return json.loads(path.read_text())

    def _write(self, data: Any, path: Path) -> None:
        path.write_text(json.dumps(data, indent=2) + "\n")


class TextDataset(FileDataset):
    """A UTF-8 text file (Markdown reports)."""

    def _read(self, path: Path) -> str:
        return path.read_text(encoding="utf-8")

    def _write(self, data: str, path: Path) -> None:
        path.write_text(data, encoding="utf-8")


class PngDataset(FileDataset):
    """A matplotlib figure saved as PNG; the figure is closed after saving."""

    def __init__(
        self,
        filepath: str,
        dpi: int = 120,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, metadata, credentials, fs_args)
        self._dpi = dpi

    def _read(self, path: Path) -> bytes:
        return path.read_bytes()

    def _write(self, data: Figure, path: Path) -> None:
        import matplotlib.pyplot as plt

        data.savefig(path, format="png", dpi=self._dpi, bbox_inches="tight")
        plt.close(data)
