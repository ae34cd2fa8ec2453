"""Where a dataset's file lives: a local path, or any fsspec URL (``s3://``, ``gs://``, ``memory://``…).

Datasets read and write local files (torch, onnx, numpy and matplotlib all want one), so a
remote file is copied to a temporary local file to be read, and written locally then uploaded.
What a save guarantees:

- local files (and ``file://``): write-then-rename in the same folder (``atomic_write``);
- filesystems that rename (SFTP, HDFS, …): upload to ``<name>.tmp-<random>``, then ``mv`` it over
  the file, so readers see the old file or the new one;
- object stores (S3, GCS, Azure, fsspec's ``memory``): one upload. The store makes an object
  visible whole when its upload completes (a multipart upload too) and a failed upload leaves the
  previous object, which is the guarantee there; there is no rename to do.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.core import split_protocol

from kedro_edge.io.atomic import atomic_write

OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


@dataclass(frozen=True)
class Location:
    url: str  # as given (a local path, or protocol://...)
    protocol: str | None  # None: local
    path: str  # without the protocol
    fs: Any  # fsspec filesystem, or None for local files

    @classmethod
    def of(cls, url: str, credentials: dict[str, Any] | None = None, fs_args: dict[str, Any] | None = None):
        """``url``'s location; ``credentials`` and ``fs_args`` go to the fsspec filesystem (as in
        kedro-datasets: e.g. ``key``/``secret``, ``client_kwargs: {endpoint_url: …}``)."""
        protocol, path = split_protocol(str(url))
        if protocol in (None, "file", "local"):
            return cls(str(url), None, path, None)
        fs = fsspec.filesystem(protocol, **{**(credentials or {}), **(fs_args or {})})
        return cls(str(url), protocol, path, fs)

    @property
    def local(self) -> bool:
        return self.fs is None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def __str__(self) -> str:
        return str(Path(self.path)) if self.local else self.url

    def exists(self) -> bool:
        return Path(self.path).is_file() if self.local else bool(self.fs.isfile(self.path))

    @contextlib.contextmanager
    def readable(self) -> Iterator[Path]:
        """A local file with the content: the file itself, or a temporary copy of a remote one
        (same name, so its suffix still says its format)."""
        if self.local:
            yield Path(self.path)
            return
        with tempfile.TemporaryDirectory(prefix="kedro-edge-") as tmp:
            copy = Path(tmp) / self.name
            self.fs.get_file(self.path, str(copy))
            yield copy

    def write(self, writer: Callable[[Path], None]) -> None:
        """``writer(path)`` fills a local file, which then replaces this location's file as the
        module docstring says; a failure leaves the previous file."""
        if self.local:
            atomic_write(Path(self.path), writer)
            return
        with tempfile.TemporaryDirectory(prefix="kedro-edge-") as tmp:
            staged = Path(tmp) / self.name
            writer(staged)
            if self.protocol in OBJECT_STORES:
                self.fs.put_file(str(staged), self.path)
                return
            self.fs.makedirs(PurePosixPath(self.path).parent.as_posix(), exist_ok=True)
            partial = f"{self.path}.tmp-{secrets.token_hex(4)}"
            try:
                self.fs.put_file(str(staged), partial)
                self.fs.mv(partial, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError, OSError):
                    if self.fs.exists(partial):
                        self.fs.rm(partial)
