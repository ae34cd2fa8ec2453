"""The base class of every file dataset here: a local path or an fsspec URL, atomic saves,
and one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from kedro_edge.errors import DataError
from kedro_edge.io.location import Location


class FileDataset(AbstractDataset):
    """A file: ``_read``/``_write`` in subclasses work on a local path (a temporary copy when the
    file is remote); saves replace the file whole (``io.location``); errors name the file or URL.

    ``credentials`` and ``fs_args`` go to the fsspec filesystem of a URL (``s3://…``), as in
    kedro-datasets; keep credentials in ``conf/local/credentials.yml``.
    """

    def __init__(
        self,
        filepath: str,
        metadata: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        self._location = Location.of(filepath, credentials, fs_args)
        self._filepath: Path | str = Path(self._location.path) if self._location.local else self._location.url
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}  # never the credentials

    def _exists(self) -> bool:
        return self._location.exists()

    def load(self) -> Any:
        if not self._location.exists():
            raise DataError(f"{self._filepath}: file not found")
        with self._location.readable() as path:
            try:
                return self._read(path)
            except DataError as exc:  # name the URL, not the temporary copy
                raise DataError(str(exc).replace(str(path), str(self._filepath))) from None
            except Exception as exc:  # a corrupt file: say which one, in one line
                raise DataError(f"{self._filepath}: cannot read ({type(exc).__name__}: {exc})") from None

    def save(self, data: Any) -> None:
        self._location.write(lambda tmp: self._write(data, tmp))

    def _read(self, path: Path) -> Any:
        raise NotImplementedError

    def _write(self, data: Any, path: Path) -> None:
        raise NotImplementedError
