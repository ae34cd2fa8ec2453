"""Small truths: the README's node table is the pipelines' nodes, and no comment, docstring or
document points at a file or a kedro_edge name the repository does not have."""

from __future__ import annotations

import ast
import importlib
import io
import re
import subprocess
import tokenize
from pathlib import Path

from pipelines.pipeline_registry import register_pipelines
from tests.pipelines.project import ROOT

PATH = re.compile(
    r"(?<![\w/.<])(?:src|tests|benchmarks|pipelines|conf|scripts|\.ci)/[\w./-]+\.(?:py|ya?ml|md|sh|toml)\b"
)
NAME = re.compile(r"(?<![\w.])kedro_edge(?:\.\w+)+")
USER_FILES = ("conf/local/",)  # the user's own, never in the repository


def prose(path: Path) -> str:
    """What a reader reads as text: a Python file's comments and docstrings, any other file whole."""
    text = path.read_text()
    if path.suffix != ".py":
        return text
    parts = [
        t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    return "\n".join(parts)


def documents() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    names = [n for n in tracked.stdout.split() if n.endswith((".py", ".yml", ".yaml", ".md", ".sh", ".toml"))]
    return [ROOT / n for n in names + [".ci/run"] if (ROOT / n).is_file()]


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_the_readme_node_table_is_the_pipelines_nodes():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## What `kedro run` does", 1)[1].split("\n\n", 2)[1]
    listed: dict[str, set[str]] = {}
    pipeline = None
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        pipeline = cells[0].strip("`") or pipeline
        listed.setdefault(pipeline, set()).update(re.findall(r"`(\w+)`", cells[1]))
    registry = register_pipelines()
    assert listed == {name: {n.name for n in registry[name].nodes} for name in listed}
    assert set(listed) == {"training", "compression", "validation", "deployment"}


def test_no_document_points_at_a_file_or_name_the_repository_does_not_have():
    stale = []
    for doc in documents():
        text = prose(doc)
        for path in PATH.findall(text):
            if not path.startswith(USER_FILES) and not (ROOT / path).exists():
                stale.append(f"{doc.relative_to(ROOT)}: {path}")
        for name in NAME.findall(text):
            if not resolves(name):
                stale.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not stale, stale


def test_the_readme_layout_names_every_module_of_the_plugin():
    """Each package of src/kedro_edge has a row in README's Layout naming exactly its modules."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout\n") : text.index("## Benchmarks\n")]
    package = ROOT / "src" / "kedro_edge"
    rows = {}
    for line in layout.splitlines():
        cells = line.split(" | ")
        m = re.match(r"\| `(\w+)/`(?: \|)?$|\| `src/kedro_edge/` root$", cells[0])
        if m and (m.group(1) is None or (package / m.group(1) / "__init__.py").exists()):
            rows[m.group(1) or ""] = set(re.findall(r"`(\w+\.py)`", cells[1]))
    folders = {p.parent.name for p in package.glob("*/__init__.py")}
    assert set(rows) == folders | {""}
    for folder, named in rows.items():
        modules = {p.name for p in (package / folder).glob("*.py")} - {"__init__.py"}
        assert named == modules, f"README Layout, {folder or 'root'}: {named ^ modules}"
