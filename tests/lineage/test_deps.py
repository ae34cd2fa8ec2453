"""Each DVC stage's code deps: found from its command, and the project's dvc.yaml covers them."""

from __future__ import annotations

from pathlib import Path

from kedro_edge.lineage.deps import Project, check, closure, covered
from pipelines.pipeline_registry import register_pipelines
from tests.pipelines.project import ROOT


def write(root: Path, files: dict[str, str]) -> Project:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return Project(root)


def test_imports_are_followed_inside_functions_but_not_under_type_checking_nor_through_reexports(tmp_path):
    project = write(
        tmp_path,
        {
            "src/kedro_edge/__init__.py": "",
            "src/kedro_edge/nodes/__init__.py": "from kedro_edge.nodes.b import x\nfrom .c import y\n",
            "src/kedro_edge/nodes/a.py": (
                "from typing import TYPE_CHECKING\nimport numpy\n"
                "if TYPE_CHECKING:\n    from kedro_edge import annotations_only\n"
                "def f():\n    from kedro_edge.lazy import g\n    from . import sibling\n"
            ),
            "src/kedro_edge/nodes/b.py": "",
            "src/kedro_edge/nodes/c.py": "",
            "src/kedro_edge/nodes/sibling.py": "",
            "src/kedro_edge/lazy.py": "from kedro_edge.deeper import h\n",
            "src/kedro_edge/deeper.py": "",
            "src/kedro_edge/annotations_only.py": "",
        },
    )
    found = {str(p) for p in closure(project, ["kedro_edge.nodes.a"])}
    assert found == {
        "src/kedro_edge/__init__.py",
        "src/kedro_edge/nodes/__init__.py",  # it runs, but its re-exports (b, c) are not the stage's
        "src/kedro_edge/nodes/a.py",
        "src/kedro_edge/nodes/sibling.py",  # relative, in a function
        "src/kedro_edge/lazy.py",  # imported in a function
        "src/kedro_edge/deeper.py",  # and what it imports
    }


def test_a_folder_dep_covers_the_files_under_it():
    assert covered(Path("src/kedro_edge/compress/prune.py"), ["src/kedro_edge/compress"])
    assert not covered(Path("src/kedro_edge/compress.py"), ["src/kedro_edge/compress"])
    assert not covered(Path("src/kedro_edge/modelsx.py"), ["src/kedro_edge/models"])


def test_every_stage_of_dvc_yaml_covers_the_code_its_kedro_run_runs():
    found = check(ROOT, register_pipelines())
    assert set(found) == {"training", "search", "compression", "validation"}
    assert {s: f["missing"] for s, f in found.items()} == {s: [] for s in found}
    # the node modules, found from each stage's cmd
    assert "src/kedro_edge/nodes/training.py" in found["training"]["code"]
    assert "src/kedro_edge/nodes/deployment.py" not in found["training"]["code"]
    assert "src/kedro_edge/models/training.py" in found["validation"]["code"]  # predict
    assert "src/kedro_edge/models/cnn.py" in found["validation"]["code"]  # unpickles the modules
    assert "src/kedro_edge/search/study.py" in found["search"]["code"]
    assert "src/kedro_edge/search/study.py" not in found["compression"]["code"]


def test_a_users_teacher_file_is_a_dep_of_the_stage_that_loads_it(tmp_path):
    import shutil

    import yaml

    for name in ("dvc.yaml", "conf/base/catalog.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())
    params["model"]["checkpoint"] = "data/01_raw/user_teacher.pth"
    (tmp_path / "conf/base/parameters_training.yml").write_text(yaml.safe_dump(params))
    found = check(tmp_path, register_pipelines())
    assert found["training"]["missing"] == ["data/01_raw/user_teacher.pth"]  # dvc.yaml must list it
    assert "data/01_raw/user_teacher.pth" not in found["compression"]["code"]  # reads teacher.pt
