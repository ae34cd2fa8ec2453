"""Where each parameter came from, and model switches that don't inherit the old ``kwargs``.

Kedro merges ``--params``, the run environment (``conf/local``) and ``conf/base`` into one
dict and forgets the origin. ``ParamSources`` reads the same layers again, so an error can
name the file (or ``--params``) to edit, and ``replace_stale_kwargs`` can tell that a run
switched ``model.class_path`` to another class: that class gets only the ``kwargs`` given
with it, never the ones written for the class it replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kedro_edge.models.factory import ModelSpec

RUNTIME = "--params"

# parameters that are a ModelSpec: {class_path, kwargs}
MODEL_SPECS: tuple[tuple[str, ...], ...] = (("model",), ("compression", "distill", "student"))

_MISSING = object()


@dataclass(frozen=True)
class Layer:
    """One source of parameters: ``label`` is what a message names (a file or ``--params``)."""

    label: str
    data: dict[str, Any]
    base: bool = False  # conf/base: what dvc.yaml's params see


CATALOG_PATTERNS = ("catalog*", "catalog*/**", "**/catalog*")  # Kedro's default


class ParamSources:
    """Parameter layers, highest priority first: ``--params``, run environment files, base files."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    @classmethod
    def from_loader(cls, loader: Any, project_path: Path | str | None = None) -> ParamSources:
        """The layers of a Kedro config loader (``OmegaConfigLoader`` attributes, read as Kedro reads them).

        With Kedro's default ``destructive`` merge, a top-level key set in the run environment
        (or, once it has parameter files, in ``--params``) hides that key's base files entirely.
        """
        runtime = Layer(RUNTIME, dict(getattr(loader, "runtime_params", None) or {}))
        conf = Path(str(getattr(loader, "conf_source", "")))
        if not conf.is_dir():  # a packaged (zip) or remote configuration: only --params is known
            return cls([runtime])
        patterns = (getattr(loader, "config_patterns", None) or {}).get("parameters", ["**/parameters*"])
        root = Path(project_path) if project_path is not None else conf.parent
        base_env = getattr(loader, "base_env", None) or "base"
        run_env = getattr(loader, "env", None) or getattr(loader, "default_run_env", None)
        base = _read_env(conf, base_env, patterns, root, base=True)
        env = _read_env(conf, run_env, patterns, root) if run_env and run_env != base_env else []
        strategy = (getattr(loader, "merge_strategy", None) or {}).get("parameters", "destructive")
        if strategy == "destructive" and env:
            hidden = set(runtime.data).union(*(layer.data for layer in env))
            base = [Layer(b.label, {k: v for k, v in b.data.items() if k not in hidden}, True) for b in base]
        return cls([runtime, *env, *base])

    def overrides(self) -> list[str]:
        """``key (source)`` for each value ``--params`` or the run environment sets differently from
        ``conf/base``: what a run did that ``dvc.yaml``'s params (``conf/base`` only) do not show."""
        base: dict[str, Any] = {}
        for layer in reversed(self.layers):
            if layer.base:
                base = _merged(base, layer.data)
        out, seen = [], set()
        for layer in self.layers:
            if layer.base:
                continue
            for path, value in leaves(layer.data):
                if path not in seen and _get(base, path) != value:
                    seen.add(path)
                    out.append(f"{'.'.join(path)} ({layer.label})")
        return out

    def where(self, path: Sequence[str]) -> str | None:
        """The label of the layer that sets ``path`` (or its longest prefix that one sets); None if none."""
        path = tuple(str(p) for p in path)
        for n in range(len(path), 0, -1):
            for layer in self.layers:
                if _get(layer.data, path[:n]) is not _MISSING:
                    return layer.label
        return None

    def replace_stale_kwargs(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``params`` with each model spec's ``kwargs`` taken only from layers configuring its class.

        A layer's ``kwargs`` belong to the ``class_path`` it sets, or else to the class of the
        layers below it. When the winning ``class_path`` differs from that class, those
        ``kwargs`` are dropped instead of merged. Returns the new params (a copy when changed)
        and one line per replacement.
        """
        notes: list[str] = []
        for path in MODEL_SPECS:
            spec = _get(params, path)
            if not isinstance(spec, dict) or not isinstance(spec.get("kwargs"), dict):
                continue
            kwargs, dropped = self._kwargs_for(path, spec.get("class_path", _default_class()))
            if not dropped:
                continue
            if not notes:
                params = copy.deepcopy(params)
            _get(params, path)["kwargs"] = kwargs
            key = ".".join(path)
            notes.append(
                f"'{key}.class_path' {spec.get('class_path')} (from {self.where((*path, 'class_path'))})"
                f" replaces {', '.join(dropped)}: its kwargs are not used; '{key}.kwargs' is {kwargs}"
            )
        return params, notes

    def _kwargs_for(self, path: tuple[str, ...], class_path: str) -> tuple[dict[str, Any], list[str]]:
        """The kwargs of ``path`` merged over the layers whose class is ``class_path``; labels dropped."""
        owner, kwargs, dropped = _default_class(), {}, []
        for layer in reversed(self.layers):  # lowest priority first, as Kedro merges
            spec = _get(layer.data, path)
            if spec is None:  # e.g. `student: null`: no spec below this layer
                owner, kwargs = _default_class(), {}
                continue
            if not isinstance(spec, dict):
                continue
            owner = spec.get("class_path", owner)
            layer_kwargs = spec.get("kwargs", _MISSING)
            if layer_kwargs is _MISSING:
                continue
            if owner == class_path and isinstance(layer_kwargs, dict):
                kwargs = _merged(kwargs, layer_kwargs)
            elif layer_kwargs:
                dropped.append(f"{owner} ({layer.label})")
        return kwargs, dropped


def _default_class() -> str:
    return ModelSpec.model_fields["class_path"].default


def _get(data: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _merged(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """Deep merge as OmegaConf does: dicts key by key, anything else replaced."""
    out = dict(low)
    for key, value in high.items():
        out[key] = (
            _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
        )
    return out


def leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """``(path, value)`` of every leaf of a nested dict (an empty dict is a leaf)."""
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from leaves(value, path)
        else:
            yield path, value


def catalog_overrides(conf: Path, env: str, root: Path, base_env: str = "base") -> list[str]:
    """``catalog <entry> (source)`` for each entry ``conf/<env>`` adds or defines differently from
    ``conf/base`` (credentials are never read)."""
    base: dict[str, Any] = {}
    for layer in _read_env(conf, base_env, CATALOG_PATTERNS, root):
        base.update(layer.data)
    out = []
    for layer in _read_env(conf, env, CATALOG_PATTERNS, root) if env != base_env else []:
        out += [
            f"catalog {name} ({layer.label})" for name, entry in layer.data.items() if base.get(name) != entry
        ]
    return out


def local_overrides(root: Path, env: str = "local", conf: str = "conf") -> list[str]:
    """Parameters and catalog entries ``<conf>/<env>`` sets differently from ``<conf>/base``, read
    from the files (no Kedro session): what a model's version record notes as in force."""
    folder = root / conf
    base = _read_env(folder, "base", ["**/parameters*"], root, base=True)
    local = _read_env(folder, env, ["**/parameters*"], root)
    return ParamSources([*local, *base]).overrides() + catalog_overrides(folder, env, root)


def _read_env(conf: Path, env: str, patterns: Iterable[str], root: Path, base: bool = False) -> list[Layer]:
    """One layer per parameter file of ``conf/<env>`` (hidden files skipped, as Kedro does)."""
    folder = conf / env
    if not folder.is_dir():
        return []
    files = {p for pattern in patterns for p in folder.glob(pattern)}
    layers = []
    for path in sorted(files):
        relative = path.relative_to(folder)
        if not path.is_file() or path.suffix not in {".yml", ".yaml", ".json"}:
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # Kedro has read it already, and reports its own errors
        if isinstance(data, dict):
            layers.append(Layer(_label(path, root), data, base))
    return layers


def _label(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
