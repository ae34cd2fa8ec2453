"""Test setup only: lets PyPI's torchvision (a CUDA build) import beside the CPU torch here.

Its C++ ops fail to load against this torch, and ``torchvision/_meta_registrations.py`` then
registers fake kernels for two ops (``nms``, ``qnms``) whose schemas were never defined
(``../shared/PITFALLS.md``). Defining those two schemas first lets the real model code import
and run; detection ops stay unavailable. Where torchvision's ops do load (a matching pair of
wheels), nothing is defined. Never imported by the plugin: users run a matching pair.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = ("nms", "qnms")
_library: torch.library.Library | None = None


def install() -> bool:
    """Define the missing schemas if torchvision's own ops cannot load; True if it did."""
    global _library
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None or _library is not None:
        return False
    ops = next(Path(spec.origin).parent.glob("_C*.so"), None)
    try:
        if ops is not None:
            torch.ops.load_library(str(ops))
            return False
    except OSError:
        pass  # undefined CUDA symbols: the CPU torch here
    _library = torch.library.Library("torchvision", "DEF")
    for name in _SCHEMAS:
        _library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True
