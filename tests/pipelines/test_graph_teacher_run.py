"""`kedro run` from a teacher known only as a graph: an ONNX file to a gated release on a loopback
SSH fleet; TorchScript and torch.export files through every stage that applies."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import onnx
import pytest
import torch
import yaml

from tests.conftest import needs_sshd
from tests.pipelines.project import TINY, copy_project, kedro, sha

SKIPPED = ("lowrank", "prune", "distill", "cluster")  # TINY switches every technique on


def _given(dest, **model) -> None:
    base = TINY["parameters_training.yml"]
    params = {"model": {**base["model"], **model}, "data": {**base["data"], "preprocessing": {}}}
    (dest / "conf/local/parameters_training.yml").write_text(yaml.safe_dump(params))


def _teacher(project) -> torch.nn.Module:
    return torch.load(project / "data/06_models/teacher.pt", weights_only=False).eval()


def _metrics(folder) -> dict:
    return json.loads((folder / "data/08_reporting/compression_metrics.json").read_text())


def _graph_stages_scored_as_the_module(dest, project) -> dict:
    """The teacher and INT8 rows only; the user's graph scores what the module it came from scored
    on the same test split (one image either way: float rounding of ONNX vs torch)."""
    metrics = _metrics(dest)
    assert list(metrics["stages"]) == ["teacher", "int8"]
    teacher, module = metrics["stages"]["teacher"], _metrics(project)["stages"]["teacher"]
    assert abs(teacher["accuracy"] - module["accuracy"]) <= 1 / teacher["n"]
    return metrics


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory, project):
    """A project with only the user's ONNX file (their names, a fixed batch of 1) and the data,
    run once against two loopback devices."""
    from kedro_edge.testing import start_fleet

    dest = copy_project(tmp_path_factory.mktemp("onnx-teacher"))
    buffer = io.BytesIO()
    torch.onnx.export(_teacher(project), (torch.zeros(1, 1, 12, 12),), buffer, input_names=["images"],
                      output_names=["scores"], opset_version=17, dynamo=False)  # fmt: skip
    (dest / "user.onnx").write_bytes(buffer.getvalue())
    _given(dest, onnx="user.onnx")
    with start_fleet(tmp_path_factory.mktemp("fleet"), ["edge-a", "edge-b"], port=0) as fleet:
        shutil.copy(fleet.devices_yml, dest / "devices.yml")
        yield dest, fleet, kedro(dest, "run")


@needs_sshd
def test_an_onnx_teacher_gets_int8_and_a_gated_release(onnx_run, project):
    dest, fleet, result = onnx_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    said = result.stdout + result.stderr
    for name in SKIPPED:  # one line each, saying why
        why = f"the teacher is a graph (onnx user.onnx) and {name} rewrites a torch module"
        line = f"compression.{name}: skipped: {why}"
        assert said.count(line) == 1, (name, said[-3000:])

    metrics = _graph_stages_scored_as_the_module(dest, project)
    assert metrics["stages"]["teacher"]["macs"] > 0 and metrics["stages"]["int8"]["macs"] > 0
    assert metrics["passed"] is True and metrics["gates"]

    model = dest / "data/06_models/model.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(model).graph.node}
    source = json.loads((dest / "data/06_models/teacher_source.json").read_text())
    assert source == {"kind": "onnx", "path": "user.onnx", "sha256": sha(dest / "user.onnx")}

    record = json.loads((dest / "data/08_reporting/release.json").read_text())
    assert record["verdict"] == "released"
    assert record["candidate"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    for name in ("edge-a", "edge-b"):
        assert (fleet.device(name)["workdir"] / "current" / "model.onnx").read_bytes() == model.read_bytes()


@pytest.mark.parametrize("kind", ["torchscript", "exported_program"])
def test_torchscript_and_exported_programs_are_compressed_as_graphs(project, tmp_path, kind):
    teacher, dest = _teacher(project), copy_project(tmp_path)
    if kind == "torchscript":
        torch.jit.save(torch.jit.trace(teacher, torch.zeros(1, 1, 12, 12)), dest / "user.pt")
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(teacher, (torch.zeros(2, 1, 12, 12),), dynamic_shapes=({0: batch},))
        torch.export.save(program, dest / "user.pt")
    _given(dest, checkpoint="user.pt")

    result = kedro(dest, "run", "--pipelines", "training,compression,validation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((dest / "data/06_models/teacher_source.json").read_text())["kind"] == kind
    _graph_stages_scored_as_the_module(dest, project)
