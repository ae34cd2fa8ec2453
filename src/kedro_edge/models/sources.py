"""Where the teacher comes from: trained here, or a file the user already has.

``model.checkpoint`` names a file written by PyTorch; what it holds is told apart by its
contents, not its name:

- a state dict, or a checkpoint dict holding one under ``state_dict`` / ``model_state_dict`` /
  ``model`` / ``net`` / ``module`` (a ``module.`` prefix from DataParallel is dropped): loaded
  into ``model.class_path`` built for the data, keys checked strictly;
- a whole pickled module (``torch.save(model)``): used as it is;
- a TorchScript file or a ``torch.export`` program (``.pt2``): graphs without Python
  modules, recognised and named (the stages that rewrite a torch graph cannot take them).

Loading a whole pickled module runs code from the file (``weights_only=False``): only point
``model.checkpoint`` at files you made. State dicts load with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError
from torch import nn

from kedro_edge.errors import ConfigError, first_line
from kedro_edge.models.factory import ModelSpec, build_model


class TeacherSpec(ModelSpec):
    """``model``: the architecture, and the file holding a teacher already trained, if any."""

    checkpoint: str | None = None  # a state dict / checkpoint / pickled module / TorchScript / .pt2
    onnx: str | None = None  # or an ONNX file: the graph-only steps (kedro_edge.runtimes.graph_teacher)
    finetune_epochs: int = Field(0, ge=0)  # a given teacher is evaluated as it is unless this is > 0

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        if self.checkpoint is not None and self.onnx is not None:
            raise PydanticCustomError("one_source", "set model.checkpoint or model.onnx, not both")
        return self

    @property
    def source(self) -> tuple[str, str] | None:
        """(parameter key, path) of the given teacher, or None to train one."""
        if self.onnx is not None:
            return "model.onnx", self.onnx
        return ("model.checkpoint", self.checkpoint) if self.checkpoint is not None else None


class SourceKind(str, Enum):
    """What ``model.checkpoint`` (or ``model.onnx``) holds."""

    TRAINED = "trained"  # no file: trained here from class_path
    STATE_DICT = "state_dict"
    MODULE = "module"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "exported_program"
    ONNX = "onnx"

    @property
    def graph_only(self) -> bool:
        """A graph without its Python module: only the steps that work on ONNX apply."""
        return self in (SourceKind.TORCHSCRIPT, SourceKind.EXPORTED_PROGRAM, SourceKind.ONNX)


class TeacherSource(BaseModel):
    """The teacher's origin as the version record and ``kedro edge lineage`` show it."""

    kind: SourceKind
    path: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
_TRIM = 3  # keys named in a mismatch message


def kind_of(path: Path) -> SourceKind:
    """What a PyTorch file holds, from its zip entries (TorchScript, ``.pt2``) or its pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return SourceKind.TORCHSCRIPT
        if any(n.endswith("/archive_format") for n in names):  # torch.export.save's zip
            return SourceKind.EXPORTED_PROGRAM
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            return SourceKind.MODULE  # objects beyond tensors and containers: a pickled module
        raise
    return SourceKind.STATE_DICT


def detect(path: Path, key: str = "model.checkpoint") -> SourceKind:
    """``kind_of`` a file that must exist and be PyTorch's; else one line naming ``key`` and the file."""
    if not path.is_file():
        raise ConfigError(f"parameter '{key}': {path} does not exist")
    try:
        return kind_of(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ConfigError(f"parameter '{key}': {path} is not a PyTorch file ({first_line(exc)})") from None


def load_checkpoint(
    spec: ModelSpec, path: Path, input_shape: Sequence[int], num_classes: int, key: str = "model.checkpoint"
) -> tuple[nn.Module, SourceKind]:
    """The module in ``path``: a whole module as saved, or ``spec`` built and given the weights.

    Errors are one line naming ``key`` and the file: missing file, an unreadable one, a graph
    format (``kedro_edge.runtimes.graph_teacher`` loads those), keys that do not match the
    architecture.
    """
    kind = detect(path, key)
    if kind.graph_only:
        raise ConfigError(
            f"parameter '{key}': {path} is a {kind.value.replace('_', ' ')}, a graph without its "
            "Python module (load it with kedro_edge.runtimes.graph_teacher)"
        )
    if kind is SourceKind.MODULE:
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ImportError) as exc:  # the module's class is not importable here
            raise ConfigError(
                f"parameter '{key}': {path} holds a module whose class cannot be imported ({first_line(exc)})"
            ) from None
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise ConfigError(
                f"parameter '{key}': {path} is not a PyTorch file ({first_line(exc)})"
            ) from None
        module = module.get("model") if isinstance(module, Mapping) else module
        if not isinstance(module, nn.Module):
            raise ConfigError(f"parameter '{key}': {path} holds a {type(module).__name__}, not a module")
        _probe_shape(module, input_shape, path, key)
        return module.eval(), kind
    state = _state_dict(torch.load(path, map_location="cpu", weights_only=True), path, key)
    model = build_model(spec, input_shape, num_classes)
    missing, unexpected = _mismatch(model.state_dict(), state)
    if missing or unexpected:
        raise ConfigError(
            f"parameter '{key}': {path} does not fit {spec.class_path}: "
            f"missing {_some(missing)}, unexpected {_some(unexpected)}"
        )
    expected = model.state_dict()
    other = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
             for k, v in state.items() if v.shape != expected[k].shape]  # fmt: skip
    if other:
        raise ConfigError(
            f"parameter '{key}': {path} does not fit {spec.class_path}: shapes differ: {_some(other)}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), kind


def _state_dict(loaded: Any, path: Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, found at the top or under a checkpoint's usual keys."""
    if isinstance(loaded, Mapping) and not _is_state(loaded):
        inner = next((loaded[k] for k in _STATE_KEYS if k in loaded and _is_state(loaded[k])), None)
        if inner is None:
            raise ConfigError(
                f"parameter '{key}': {path} holds a dict without a state dict "
                f"(keys {_some(list(loaded))}; expected tensors, or one of {', '.join(_STATE_KEYS)})"
            )
        loaded = inner
    if not isinstance(loaded, Mapping) or not _is_state(loaded):
        raise ConfigError(f"parameter '{key}': {path} holds a {type(loaded).__name__}, not a state dict")
    state = dict(loaded)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    return [k for k in expected if k not in given], [k for k in given if k not in expected]


def _some(keys: Sequence[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:_TRIM])
    return f"{shown} (+{len(keys) - _TRIM} more)" if len(keys) > _TRIM else shown


def _probe_shape(module: nn.Module, input_shape: Sequence[int], path: Path, key: str) -> None:
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(tuple(input_shape)))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(
            f"parameter '{key}': {path} cannot take inputs of shape {tuple(input_shape)} ({first_line(exc)})"
        ) from None
