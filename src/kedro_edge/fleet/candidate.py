"""A candidate: the model bytes to ship, with its manifest and the parity batch, on local disk."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FILES = ("manifest.json", "parity.npy", "model.onnx")  # upload order: the big one last


@dataclass
class Candidate:
    """``folder`` holds model.onnx, manifest.json and parity.npy; ``sha256`` names the version."""

    folder: Path
    sha256: str
    size_bytes: int

    @classmethod
    def prepare(cls, model: bytes, manifest: dict[str, Any], parity: np.ndarray, folder: Path) -> Candidate:
        sha = hashlib.sha256(model).hexdigest()
        (folder / "model.onnx").write_bytes(model)
        (folder / "manifest.json").write_text(
            json.dumps({**manifest, "sha256": sha, "size_bytes": len(model)}, indent=2)
        )
        with open(folder / "parity.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(parity, dtype=np.float32), allow_pickle=False)
        return cls(folder, sha, len(model))

    @property
    def upload_bytes(self) -> int:
        """What an upload writes on the device: every file of the version."""
        return sum((self.folder / name).stat().st_size for name in FILES)


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kedro-edge-candidate-")
