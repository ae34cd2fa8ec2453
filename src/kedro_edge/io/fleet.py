"""Datasets for deployment: the fleet registry and the model file as bytes with its version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro_edge.errors import ConfigError, DataError
from kedro_edge.fleet.inventory import Fleet, load_fleet
from kedro_edge.io.base import FileDataset
from kedro_edge.lineage.versioning import artifact_version, file_hashes


class FleetDataset(FileDataset):
    """devices.yml, validated (read-only: people edit it, pipelines don't)."""

    def load(self) -> Fleet:
        try:
            if self._location.local:
                return load_fleet(self._filepath)
            with self._location.readable() as path:  # a remote registry: give its key paths absolute
                return load_fleet(path)
        except ConfigError as exc:
            raise DataError(str(exc)) from None

    def save(self, data: Any) -> None:
        raise DataError(f"{self._filepath}: the fleet registry is read-only for pipelines")


@dataclass(frozen=True)
class ModelFile:
    """A model exactly as it is on disk, and what identifies it (sha256, DVC md5, git revision)."""

    data: bytes
    version: dict[str, Any]


def _project_root(path: Path) -> Path:
    for folder in path.resolve().parents:
        if (folder / "pyproject.toml").is_file() or (folder / "dvc.yaml").is_file():
            return folder
    return path.resolve().parent


class ModelFileDataset(FileDataset):
    """The bytes of a model file, unparsed: what ships is what was validated, byte for byte."""

    def _read(self, path: Path) -> ModelFile:
        if not self._location.local:  # no DVC or git record of a remote file: its hashes only
            return ModelFile(path.read_bytes(), {"path": str(self._filepath), **file_hashes(path)})
        root = _project_root(path)
        version = artifact_version(root, path.resolve().relative_to(root).as_posix())
        return ModelFile(path.read_bytes(), version)

    def save(self, data: Any) -> None:
        raise DataError(f"{self._filepath}: ModelFileDataset is read-only (OnnxModelDataset writes it)")
