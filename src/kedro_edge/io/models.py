"""Datasets for torch modules and ONNX models."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from kedro_edge.errors import DataError
from kedro_edge.io.base import FileDataset


class TorchModuleDataset(FileDataset):
    """A whole ``nn.Module`` (architecture and weights) via ``torch.save``.

    Whole modules, not state dicts: a pruned model's layer shapes no longer match its
    class's constructor. Loading unpickles (``weights_only=False``), so only load files
    this project wrote.
    """

    def _read(self, path: Path) -> nn.Module:
        module = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise DataError(f"{path}: holds a {type(module).__name__}, not a torch.nn.Module")
        return module.eval()

    def _write(self, data: nn.Module, path: Path) -> None:
        # through a file object: torch.save names the zip's folder after a path's file name, and
        # the path here is a random temporary one, so the same module would give other bytes
        # (and DVC a new md5, re-running every later stage) on each save
        with open(path, "wb") as fh:
            torch.save(data, fh)


class OnnxModelDataset(FileDataset):
    """An ``onnx.ModelProto`` in one file (no external data: edge models are small)."""

    def _read(self, path: Path) -> onnx.ModelProto:
        return onnx.load(path)

    def _write(self, data: onnx.ModelProto, path: Path) -> None:
        onnx.save(data, path)
