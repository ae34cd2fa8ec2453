"""A candidate: the model bytes to ship, with its manifest and the parity batch, on local disk."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.runtimes import codec

MODEL = "model.onnx"
FILES = ("manifest.json", "parity.npy", MODEL)  # what a version holds on the device


@dataclass
class Candidate:
    """``folder`` holds model.onnx, manifest.json and parity.npy, and what goes on the wire;
    ``sha256`` (of the uncompressed model) names the version. Sizes are taken once, here: a
    rollout reads them for every device."""

    folder: Path
    sha256: str
    size_bytes: int
    wire: dict[str, int] = field(default_factory=dict)  # file sent -> bytes, in upload order (model last)
    upload_bytes: int = 0  # what the version takes on the device's disk (the model uncompressed)

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
            dtype = np.uint8 if parity.dtype == np.uint8 else np.float32  # a baked model takes pixels
            np.save(fh, np.ascontiguousarray(parity, dtype=dtype), allow_pickle=False)
        sent = (*FILES[:-1], MODEL + suffix)
        wire = {name: (folder / name).stat().st_size for name in sent}
        on_disk = sum(wire[name] for name in FILES[:-1]) + len(model)
        return cls(folder, sha, len(model), wire, on_disk)

    @property
    def shipped_bytes(self) -> int:
        """What goes over the wire: every file, the model compressed."""
        return sum(self.wire.values())

    @property
    def model_shipped_bytes(self) -> int:
        return self.wire[next(reversed(self.wire))]


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kedro-edge-candidate-")
