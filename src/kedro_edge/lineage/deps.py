"""The code each DVC stage runs, found from the stage's own command, checked against ``dvc.yaml``.

A stage's ``cmd`` (``kedro run --pipelines=... [--to-outputs=...] [--from-inputs=...]``) names
the nodes it runs. Their modules, followed through every ``import`` (function-level ones too),
plus the project's settings and hooks, the catalog datasets those nodes read and write, and the
model classes the parameters name by import path, and a teacher file (``model.checkpoint``) are
the project files a stage depends on.
``dvc.yaml`` must cover each of them (the file, or a folder holding it), or DVC would reuse a
stage's outputs after an edit to code it ran.

A package's ``__init__`` reached only because a submodule was imported is a dependency (it runs)
but its own imports are not followed: ``kedro_edge/nodes/__init__.py`` re-exports every pipeline's
nodes, and the training stage does not run the deployment nodes it happens to import.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGES = {"kedro_edge": "src/kedro_edge", "pipelines": "pipelines"}  # top-level name -> folder
ALWAYS = ("pipelines.settings",)  # what every ``kedro run`` runs: settings -> hooks -> validation


@dataclass(frozen=True)
class Project:
    root: Path

    def file_of(self, module: str) -> Path | None:
        """The project file of ``module`` (relative to the root), or None if it is not the project's."""
        top, *rest = module.split(".")
        if top not in PACKAGES:
            return None
        base = Path(PACKAGES[top], *rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if (self.root / candidate).is_file():
                return candidate
        return None


def _imports(project: Project, module: str, path: Path) -> Iterable[str]:
    """Every module ``path`` imports, at any depth of its code; ``from a import b`` yields ``a.b``
    when that is a module, else ``a``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _running(ast.parse((project.root / path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if project.file_of(sub) is not None else base


def _running(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (annotations: they never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def closure(project: Project, modules: Iterable[str]) -> set[Path]:
    """The project files that importing ``modules`` runs (see the module docstring)."""
    files: set[Path] = set()
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = project.file_of(module)
        if path is None:
            continue
        files.add(path)
        parts = module.split(".")
        for i in range(1, len(parts)):  # parent packages run, their re-exports are not followed
            parent = project.file_of(".".join(parts[:i]))
            if parent is not None:
                files.add(parent)
        todo.extend(_imports(project, module, path))
    return files


def _run_options(cmd: str) -> dict[str, list[str]]:
    """``kedro run``'s pipeline-selecting options in ``cmd``, as lists."""
    args = shlex.split(cmd)
    out: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        out[key] = [v for v in value.split(",") if v]
    return out


def _class_paths(value: Any) -> Iterable[str]:
    """Modules of every ``class_path`` in a parameters tree (the model, a distillation student)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "class_path" and isinstance(item, str):
                yield item.rpartition(".")[0]
            else:
                yield from _class_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _class_paths(item)


def _teacher_files(tree: Any) -> Iterable[Path]:
    """The file of a teacher the user trained (``model.checkpoint`` or ``model.onnx``): its stage reads it."""
    model = tree.get("model") if isinstance(tree, dict) else None
    for key in ("checkpoint", "onnx"):
        if isinstance(model, dict) and isinstance(model.get(key), str):
            yield Path(model[key])


def stage_code(project: Project, cmd: str, pipelines: Mapping[str, Any]) -> set[Path]:
    """The project files the ``kedro run`` of ``cmd`` runs; ``pipelines`` is the project's registry."""
    options = _run_options(cmd)
    names = options.get("pipelines") or options.get("pipeline") or ["__default__"]
    pipe = sum((pipelines[n] for n in names), start=type(pipelines[names[0]])([]))
    if options.get("to-outputs"):
        pipe = pipe.to_outputs(*options["to-outputs"])
    if options.get("from-inputs"):
        pipe = pipe.from_inputs(*options["from-inputs"])
    modules = {node.func.__module__ for node in pipe.nodes} | set(ALWAYS)
    catalog = yaml.safe_load((project.root / "conf/base/catalog.yml").read_text()) or {}
    for name in pipe.datasets():
        entry = catalog.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("type"), str):
            modules.add(entry["type"].rpartition(".")[0])
    teacher_files: set[Path] = set()
    for params in sorted((project.root / "conf/base").glob("parameters*.yml")):
        tree = yaml.safe_load(params.read_text())
        modules.update(_class_paths(tree))
        if "params:model" in pipe.inputs():
            teacher_files.update(_teacher_files(tree))
    files = closure(project, modules) | teacher_files
    files.update(p for p in (Path("pipelines/pipeline_registry.py"),) if (project.root / p).is_file())
    for name in names:  # the pipeline definitions themselves (not followed: they import every node)
        folder = Path("pipelines", name)
        files.update(f.relative_to(project.root) for f in (project.root / folder).glob("*.py"))
    return files


def covered(path: Path, deps: Iterable[str]) -> bool:
    """Whether a DVC dependency is ``path`` or a folder holding it."""
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def check(root: Path, pipelines: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per ``kedro run`` stage of ``dvc.yaml``: the code it runs (``code``) and what its deps miss."""
    project = Project(root)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out: dict[str, dict[str, list[str]]] = {}
    for name, stage in stages.items():
        if not str(stage.get("cmd", "")).startswith("kedro run"):
            continue
        code = sorted(stage_code(project, stage["cmd"], pipelines))
        deps = [str(d) for d in stage.get("deps", [])]
        out[name] = {
            "code": [str(p) for p in code],
            "missing": [str(p) for p in code if not covered(p, deps)],
        }
    return out
