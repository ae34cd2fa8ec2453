"""A release spec: what a release ships, to whom, and what the devices' outputs must match.

Made once per release (``kedro_edge.nodes.deployment.release_spec``) and handed to every task of
a sharded release, which makes the candidate's files from it again: the same bytes, so the same
sha256, in every task. ``to_json`` is its one JSON form (bytes and arrays as base64 ``.npy``).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.fleet.candidate import Candidate


@dataclass(frozen=True, eq=False)
class ReleaseSpec:
    """``version``: the model file's version (path, sha256, DVC md5, git revision); ``parity``:
    the inputs every device runs, ``reference``: the host's outputs on them; ``devices``: the
    names the release targets."""

    model: bytes
    version: dict[str, Any]
    created_utc: str
    codec: str
    manifest: dict[str, Any]
    parity: np.ndarray
    reference: np.ndarray
    devices: list[str]

    def candidate(self, folder: Path) -> Candidate:
        """The candidate's files in ``folder``."""
        return Candidate.prepare(self.model, self.manifest, self.parity, folder, self.codec)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": base64.b64encode(self.model).decode("ascii"), "version": self.version,
            "created_utc": self.created_utc, "codec": self.codec, "manifest": self.manifest,
            "parity": _array_to_json(self.parity), "reference": _array_to_json(self.reference),
            "devices": self.devices,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReleaseSpec:
        return cls(
            base64.b64decode(data["model"]), data["version"], data["created_utc"], data["codec"],
            data["manifest"], _array_from_json(data["parity"]), _array_from_json(data["reference"]),
            list(data["devices"]),
        )  # fmt: skip


def _array_to_json(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _array_from_json(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)
