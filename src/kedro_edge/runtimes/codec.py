"""How a model travels to devices: compressed with a codec of Python's standard library.

The device agent decompresses with the same standard library (it stays stdlib + numpy +
onnxruntime) and checks the sha256 of the *decompressed* model. Weight clustering and INT8
leave few distinct byte values in an ONNX file; lzma turns that into fewer bytes shipped.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable

# codec name -> (suffix of the file on the wire, compress); the agent maps suffixes back
CODECS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "lzma": (".xz", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
    "zlib": (".zz", lambda b: zlib.compress(b, 9)),
    "none": ("", lambda b: b),
}


def encode(data: bytes, codec: str) -> tuple[str, bytes]:
    """``(suffix, bytes on the wire)`` for ``data`` under ``codec``."""
    suffix, compress = CODECS[codec]
    return suffix, compress(data)


def shipped_size(data: bytes, codec: str = "lzma") -> int:
    """Bytes ``data`` costs on the wire under ``codec`` (what the reports call the shipped size)."""
    return len(encode(data, codec)[1])
