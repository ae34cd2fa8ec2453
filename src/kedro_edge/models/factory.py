"""A factory for any ``nn.Module`` from an import path.

``build_model`` takes a class or a function returning a module by import path
(``package.module.Class``, ``torchvision.models.resnet18``, ``timm.create_model``) with keyword
arguments from parameters, so a user's own architecture needs no code in this package.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from kedro_edge.errors import ConfigError
from kedro_edge.schema import Strict


class ModelSpec(Strict):
    """A ``torch.nn.Module`` class, or a function returning one, by import path, with its
    keyword arguments."""

    class_path: str = "kedro_edge.models.ResidualCNN"
    kwargs: dict[str, Any] = Field(default_factory=dict)


def import_class(path: str, key: str) -> Callable[..., Any]:
    """Import ``package.module.Class`` (or a function returning a module); a ``ConfigError``
    naming ``key`` if that fails (``import_object``) or it is another kind of object."""
    cls = import_object(path, key)
    if not callable(cls) or (inspect.isclass(cls) and not issubclass(cls, nn.Module)):
        raise ConfigError(
            f"parameter '{key}': '{path}' is neither a torch.nn.Module class nor a function returning one"
        )
    return cls


def import_object(path: str, key: str) -> Any:
    """Import ``package.module.name``; a ``ConfigError`` naming ``key`` if that fails.

    A module that does not exist: "cannot import". A module that exists but fails while
    importing (a syntax error, a missing dependency, any exception it raises) is the user's
    code: the one line names the file and line that failed instead of a traceback.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"parameter '{key}': cannot import '{path}' (expected package.module.Class)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the user's module raises at import time becomes one line
        if isinstance(exc, ModuleNotFoundError) and _is_missing(module_name, exc.name):
            raise ConfigError(f"parameter '{key}': cannot import '{path}' ({exc})") from None
        raise ConfigError(f"parameter '{key}': {_where_import_failed(exc)}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"parameter '{key}': cannot import '{path}' (no '{attr}' in {module_name})")
    return obj


def _is_missing(module_name: str, missing: str | None) -> bool:
    """True if the module not found is ``module_name`` itself or one of its parent packages."""
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))


def _where_import_failed(exc: Exception) -> str:
    """``file:line: Kind: message`` of the line in the user's code that made an import fail."""
    if isinstance(exc, SyntaxError) and exc.filename:
        file, line, message = exc.filename, exc.lineno, exc.msg
    else:
        frame = _innermost_user_frame(traceback.extract_tb(exc.__traceback__))
        file, line, message = frame.filename, frame.lineno, str(exc)
    first = message.strip().splitlines()[0] if message and message.strip() else ""
    return f"{_shown(file)}:{line}: {type(exc).__name__}" + (f": {first}" if first else "")


def _innermost_user_frame(frames: traceback.StackSummary) -> traceback.FrameSummary:
    """The innermost frame in the user's code: not importlib, the standard library, this module,
    nor (if any frame is outside them) an installed package the user's module called."""
    paths = sysconfig.get_paths()
    stdlib = tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib"))
    installed = tuple(str(Path(paths[k]).resolve()) for k in ("purelib", "platlib"))

    def third_party(f: traceback.FrameSummary) -> bool:
        parts = set(Path(f.filename).parts)
        return str(Path(f.filename).resolve()).startswith(installed) or bool(
            parts & {"site-packages", "dist-packages"}
        )

    def internal(f: traceback.FrameSummary) -> bool:
        if f.filename.startswith("<") or Path(f.filename).resolve() == Path(__file__).resolve():
            return True  # importlib's frozen bootstrap, or import_class itself
        return str(Path(f.filename).resolve()).startswith(stdlib) and not third_party(f)

    candidates = [f for f in frames if not internal(f)]
    own = [f for f in candidates if not third_party(f)]
    return (own or candidates or list(frames))[-1]


def _shown(file: str) -> str:
    """``file`` relative to the working directory (the project, under ``kedro run``) if inside it."""
    path = Path(file)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return file


def data_kwargs(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """What the data decides, by constructor argument name: ``input_shape`` is one sample's
    shape with a batch axis of 1, e.g. (1, 1, 32, 32) for images or (1, 13) for feature vectors."""
    shape = tuple(int(d) for d in input_shape)
    filled: dict[str, Any] = {
        "num_classes": num_classes,
        "input_shape": shape,
        "in_features": math.prod(shape[1:]),  # what a flattened sample has
    }
    if len(shape) >= 3:  # (1, C, ...): channels only mean something for images and sequences
        filled["in_channels"] = shape[1]
        filled["in_chans"] = shape[1]  # timm's name
    return filled


def _filled(factory: Callable[..., Any], data: dict[str, Any]) -> dict[str, Any]:
    """The data's values ``factory`` takes: by name, or, through ``**kwargs``, ``num_classes``
    (torchvision's and timm's builders hand it to the architecture) and, for timm, ``in_chans``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: fill nothing
        return {}
    named = {k: v for k, v in data.items() if k in params}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        passed_on = ["num_classes"] + (["in_chans"] if _from_timm(factory) else [])
        named.update({k: data[k] for k in passed_on if k in data and k not in named})
    return named


def _from_timm(factory: Callable[..., Any]) -> bool:
    return (getattr(factory, "__module__", "") or "").split(".")[0] == "timm"


def build_model(
    spec: ModelSpec, input_shape: Sequence[int], num_classes: int, key: str = "model"
) -> nn.Module:
    """Instantiate ``spec`` for data of ``input_shape`` (with a batch axis of 1).

    ``num_classes``, ``in_channels`` (timm: ``in_chans``), ``in_features`` and ``input_shape``
    are filled in when the class or function takes them and the parameters don't set them. The
    new model then runs one zero sample, so a model that cannot take this data fails here,
    naming ``key``.
    """
    factory = import_class(spec.class_path, f"{key}.class_path")
    kwargs = dict(spec.kwargs)
    for name, value in _filled(factory, data_kwargs(input_shape, num_classes)).items():
        kwargs.setdefault(name, value)
    try:
        model = factory(**kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"parameter '{key}.kwargs': {spec.class_path}: {first}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"parameter '{key}.class_path': {spec.class_path} returned a {type(model).__name__},"
            " not a torch.nn.Module"
        )
    _probe(model, tuple(input_shape), spec.class_path, key)
    return model


def _probe(model: nn.Module, input_shape: tuple[int, ...], class_path: str, key: str) -> None:
    """One forward pass on zeros in eval mode (BatchNorm statistics untouched)."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"parameter '{key}': {class_path} cannot take inputs of shape {input_shape} ({first})"
        ) from None
    finally:
        model.train(was_training)
