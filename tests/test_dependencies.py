"""What the code imports is what pyproject.toml declares, and nothing declared goes unused."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

import pytest

from tests.pipelines.project import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

LOCAL = {"kedro_edge", "pipelines", "tests", "benchmarks"}
# declared, used without an import statement
NOT_IMPORTED = {
    "dvc": "the `dvc` command: dvc.yaml's stages, kedro_edge.lineage.versioning",
    "dvc-s3": "a DVC plugin: the S3 remote",
    "ansible-core": "the `ansible-playbook` command: benchmarks/fleet.py",
    "ruff": "the `ruff` linter (README, Development)",
    "import-linter": "the `lint-imports` command: tests/test_layers.py",
    "dagster-webserver": "the `dagster-webserver` and `dagster dev` commands (README, Orchestrator: Dagster)",
    "dagster-dg-cli": "the `dg` command, behind `kedro dagster dev`",
    "onnxscript": "torch.onnx.export(dynamo=True) imports it: a .pt2 teacher (runtimes/graph_teacher.py)",
}
# files of the project that only an extra's users import, with that extra
EXTRA_FILES = {"pipelines/definitions.py": "dagster", "pipelines/sharded_release.py": "dagster"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """Distribution names per group: ``core`` (dependencies) and each optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {g: {norm(name.match(r).group(1)) for r in reqs} for g, reqs in groups.items()}


def imported(*folders: str) -> dict[str, str]:
    """Third-party top-level modules imported anywhere in ``folders`` (function-level imports too),
    each with the file that imports it first. A folder's ``EXTRA_FILES`` count only when named."""
    # sibling scripts, and the tests' helpers (benchmarks put tests/ on sys.path: torchvision_shim)
    local = LOCAL | {p.stem for f in (*folders, "tests") for p in (ROOT / f).glob("*.py")}
    found: dict[str, str] = {}
    for folder in folders:
        if folder in EXTRA_FILES:
            files = [ROOT / folder]
        else:
            every = (ROOT / folder).rglob("*.py")
            files = [f for f in every if f.relative_to(ROOT).as_posix() not in EXTRA_FILES]
        for path in sorted(files):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in (n.split(".")[0] for n in names):
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def distribution(module: str) -> str:
    """The distribution that provides ``module`` (installed), else the module's own name."""
    dists = importlib.metadata.packages_distributions().get(module)
    return norm(dists[0]) if dists else norm(module)


@pytest.mark.parametrize(
    ("folders", "groups"),
    [
        (("src", "pipelines"), ("core",)),
        (("tests",), ("core", "dev")),
        (("benchmarks",), ("core", "bench")),
        *(((path,), ("core", extra)) for path, extra in EXTRA_FILES.items()),
    ],
)
def test_every_imported_package_is_declared(folders, groups):
    allowed = set().union(*(declared()[g] for g in groups))
    undeclared = {
        f"{module} ({distribution(module)}, {where})"
        for module, where in imported(*folders).items()
        if distribution(module) not in allowed
    }
    assert not undeclared, f"imported in {folders} but not in pyproject.toml {groups}: {sorted(undeclared)}"


def test_every_declared_package_is_used():
    used = {distribution(m) for m in imported("src", "pipelines", "tests", "benchmarks", *EXTRA_FILES)}
    groups = declared()
    unused = {
        f"{group}: {dist}"
        for group, dists in groups.items()
        for dist in dists
        if dist not in used and dist not in NOT_IMPORTED
    }
    assert not unused, f"declared in pyproject.toml, imported nowhere: {sorted(unused)}"
