"""`kedro run` from a model the user already trained: model.checkpoint, no retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from tests.pipelines.project import TINY, copy_project, kedro, sha


def _use_checkpoint(dest: Path, checkpoint: str, contract: dict | None = None, **extra) -> None:
    """conf/local: the model from ``checkpoint``, and its input contract (pixels / 255 as they are)."""
    base = TINY["parameters_training.yml"]
    model = {**base["model"], "checkpoint": checkpoint, **extra}
    data = {**base["data"], "preprocessing": contract}
    (dest / "conf" / "local" / "parameters_training.yml").write_text(
        yaml.safe_dump({"model": model, "data": data})
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False).state_dict()


def test_a_users_checkpoint_is_evaluated_not_retrained(project, tmp_path):
    trained = torch.load(project / "data/06_models/teacher.pt", weights_only=False)
    dest = copy_project(tmp_path)
    weights = {f"module.{k}": v for k, v in trained.state_dict().items()}  # as DataParallel saves them
    torch.save({"epoch": 3, "state_dict": weights}, dest / "user.pth")
    _use_checkpoint(dest, "user.pth", contract={})

    result = kedro(dest, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "train teacher" not in result.stdout + result.stderr  # no training ran

    loaded = _weights(dest / "data/06_models/teacher.pt")
    assert all(torch.equal(loaded[k], v) for k, v in trained.state_dict().items())
    metrics = json.loads((dest / "data/08_reporting/compression_metrics.json").read_text())
    reference = json.loads((project / "data/08_reporting/compression_metrics.json").read_text())
    # the same weights on the same test split: the teacher's figures are those of the loaded weights
    assert metrics["stages"]["teacher"]["accuracy"] == reference["stages"]["teacher"]["accuracy"]
    source = {"kind": "state_dict", "path": "user.pth", "sha256": sha(dest / "user.pth")}
    assert json.loads((dest / "data/06_models/teacher_source.json").read_text()) == source
    validated = json.loads((dest / "data/08_reporting/validated_model.json").read_text())
    assert validated["model"]["teacher"] == source
    lineage = kedro(dest, "edge", "lineage", validated["model"]["sha256"][:12])
    assert f"teacher: state_dict user.pth sha256 {source['sha256']}" in lineage.stdout, lineage.stdout


def test_a_whole_saved_module_and_fine_tuning(project, tmp_path):
    dest = copy_project(tmp_path)
    shutil.copy(project / "data/06_models/teacher.pt", dest / "whole.pt")
    _use_checkpoint(dest, "whole.pt", contract={}, finetune_epochs=1)

    result = kedro(dest, "run", "--pipelines", "training")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((dest / "data/06_models/teacher_source.json").read_text())["kind"] == "module"
    assert "fine-tune teacher" in result.stdout + result.stderr  # (fit keeps the given weights if
    # no epoch beats them on the validation split, so the bytes may or may not change)
    tuned, given = _weights(dest / "data/06_models/teacher.pt"), _weights(dest / "whole.pt")
    assert tuned.keys() == given.keys()


def test_a_checkpoint_of_another_architecture_stops_in_one_line_and_keeps_the_teacher(project, tmp_path):
    dest = copy_project(tmp_path)
    good = dest / "data/06_models/teacher.pt"
    shutil.copy(project / "data/06_models/teacher.pt", good)
    other = {k: v for k, v in _weights(good).items() if not k.startswith("classifier")}
    torch.save(other, dest / "headless.pth")
    _use_checkpoint(dest, "headless.pth", contract={})

    result = kedro(dest, "run", "--pipelines", "training")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("kedro-edge: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith(
        "kedro-edge: error: parameter 'model.checkpoint': headless.pth does not fit "
        "kedro_edge.models.ResidualCNN: missing classifier.weight, classifier.bias, unexpected none"
    ), errors[0]
    assert sha(good) == sha(project / "data/06_models/teacher.pt")  # nothing replaced


def test_a_given_teacher_without_an_input_contract_stops_before_it_is_loaded(project, tmp_path):
    dest = copy_project(tmp_path)
    shutil.copy(project / "data/06_models/teacher.pt", dest / "whole.pt")
    _use_checkpoint(dest, "whole.pt")  # data.preprocessing not said
    result = kedro(dest, "run", "--pipelines", "training")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "kedro-edge: error: parameter 'data.preprocessing': the teacher is given (model.checkpoint or "
        "model.onnx), so say how its inputs were prepared (mean, std, scale, ...; `preprocessing: {}` "
        "for pixels / 255 as they are)"
    )
    assert not (dest / "data/06_models/teacher.pt").exists()
