"""End to end through the `kedro` CLI: a user's model module, where a bad parameter came from,
and switching the model class in one command.

None of this needs a full run: a project copy on the small digits data that has run the
training pipeline once is enough (and independent of the default data set and the gates).
Every file a test changes is restored.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.pipelines.project import copy_project, kedro, run, sha
from tests.pipelines.test_kedro_run import _fails_in_one_line

OWN_CLASS = "pipelines.custom_models.SmallCNN"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project copy on scikit-learn's digits that has run `kedro run --pipelines training`."""
    dest = copy_project(tmp_path_factory.mktemp("model_switch"))
    digits = {"raw_images": {"type": "kedro_edge.io.DigitsDataset"}}
    (dest / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(digits))
    result = kedro(dest, "run", "--pipelines", "training")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dest


def _models_unchanged(project: Path):
    """sha256 of the trained artifacts, to compare after a failed run."""
    return {p.name: sha(p) for p in (project / "data" / "06_models").glob("*.pt")}


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        (
            "from torch import nn\n\nclass Net(nn.Module:\n    pass\n",
            "pipelines/broken_models.py:3: SyntaxError: ",
        ),
        (
            "from torch import nn\nimport nonexistent_pkg\n\nclass Net(nn.Module):\n    pass\n",
            "pipelines/broken_models.py:2: ModuleNotFoundError: No module named 'nonexistent_pkg'",
        ),
    ],
    ids=["syntax-error", "import-error"],
)
def test_a_broken_model_module_fails_in_one_line_naming_its_file_and_line(project, source, needle):
    module = project / "pipelines" / "broken_models.py"
    module.write_text(source)
    before = _models_unchanged(project)
    try:
        result = kedro(
            project,
            "run",
            "--pipelines",
            "training",
            "--params",
            "model.class_path=pipelines.broken_models.Net",
        )
    finally:
        module.unlink()
    assert result.returncode == 1
    _fails_in_one_line(result, f"parameter 'model.class_path': {needle}")
    assert "Running node" not in result.stdout + result.stderr  # stopped before any node ran
    assert _models_unchanged(project) == before


def _edited(path: Path, change) -> str | None:
    """Apply ``change`` to the YAML file at ``path`` (created if missing); the old text, or None."""
    old = path.read_text() if path.exists() else None
    content = yaml.safe_load(old) if old else {}
    change(content)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return old


def _restore(path: Path, old: str | None) -> None:
    if old is None:
        path.unlink()
    else:
        path.write_text(old)


@pytest.mark.parametrize(
    ("file", "change", "needle"),
    [
        (
            "conf/local/parameters_compression.yml",
            lambda c: c.setdefault("compression", {}).setdefault("prune", {}).update(ratio=1.5),
            "conf/local/parameters_compression.yml: parameter 'compression.prune.ratio': "
            "Input should be less than 1 (got 1.5)",
        ),
        (
            "conf/base/parameters_training.yml",
            lambda c: c["training"].update(epoch=3),
            "conf/base/parameters_training.yml: unknown parameter key 'training.epoch'",
        ),
    ],
    ids=["conf-local-value", "conf-base-unknown-key"],
)
def test_a_bad_parameter_in_a_file_names_that_file(project, file, change, needle):
    path = project / file
    old = _edited(path, change)
    try:
        result = kedro(project, "run", "--pipelines", "training")
    finally:
        _restore(path, old)
    assert result.returncode == 1
    _fails_in_one_line(result, needle)


def test_one_command_switches_the_model_class(project):
    teacher, splits = (
        project / "data" / "06_models" / "teacher.pt",
        project / "data" / "05_model_input" / "splits.npz",
    )
    saved = {p: p.read_bytes() for p in (teacher, splits, splits.with_name("images.npy"))}
    try:
        # base configures ResidualCNN with `widths`: the new class gets only the kwargs given with it
        result = kedro(
            project,
            "run",
            "--pipelines",
            "training",
            "--params",
            f"model.class_path={OWN_CLASS},model.kwargs.width=8",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        loaded = run(
            project,
            sys.executable,
            "-c",
            "import torch; m = torch.load('data/06_models/teacher.pt', weights_only=False);"
            "print(type(m).__module__, type(m).__name__, m.features[0].out_channels)",
        )
        assert loaded.stdout.split() == ["pipelines.custom_models", "SmallCNN", "8"], loaded.stderr[-2000:]

        # a run that fails (kwargs the new class does not take) leaves that teacher where it was
        before = sha(teacher)
        result = kedro(
            project,
            "run",
            "--pipelines",
            "training",
            "--params",
            f"model.class_path={OWN_CLASS},model.kwargs.depth=3",
        )
        assert result.returncode == 1
        _fails_in_one_line(result, "parameter 'model.kwargs': ", "unexpected keyword argument 'depth'")
        assert sha(teacher) == before
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
