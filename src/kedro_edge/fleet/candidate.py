"""A candidate: the model bytes to ship, with its manifest and the parity batch, on local disk."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge import codec

MODEL = "model.onnx"
FILES = ("manifest.json", "parity.npy", MODEL)  # what a version holds on the device


@dataclass
class Candidate:
    """``folder`` holds model.onnx, manifest.json and parity.npy, and what goes on the wire
    (``wire``: the same, the model compressed); ``sha256`` (of the uncompressed model) names
    the version."""

    folder: Path
    sha256: str
    size_bytes: int
    wire: tuple[str, ...] = FILES  # upload order: the big one last

    @classmethod
    def prepare(
        cls,
        model: bytes,
        manifest: dict[str, Any],
        parity: np.ndarray,
        folder: Path,
        codec_name: str = "lzma",
    ) -> Candidate:
        sha = hashlib.sha256(model).hexdigest()
        (folder / MODEL).write_bytes(model)
        suffix, packed = codec.encode(model, codec_name)
        if suffix:
            (folder / (MODEL + suffix)).write_bytes(packed)
        entry = {"sha256": sha, "size_bytes": len(model), "codec": codec_name, "shipped_bytes": len(packed)}
        (folder / "manifest.json").write_text(json.dumps({**manifest, **entry}, indent=2))
        with open(folder / "parity.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(parity, dtype=np.float32), allow_pickle=False)
        return cls(folder, sha, len(model), (*FILES[:-1], MODEL + suffix))

    @property
    def upload_bytes(self) -> int:
        """What a version takes on the device's disk: every file, the model uncompressed."""
        return sum((self.folder / name).stat().st_size for name in FILES)

    @property
    def shipped_bytes(self) -> int:
        """What goes over the wire: every file, the model compressed."""
        return sum((self.folder / name).stat().st_size for name in self.wire)


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kedro-edge-candidate-")
