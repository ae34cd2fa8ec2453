"""`kedro run --pipelines deployment` and `kedro edge devices` against a loopback SSH fleet."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from kedro_edge.fleet.device import AGENT_SOURCE
from tests.conftest import needs_sshd
from tests.pipelines.project import kedro

pytestmark = needs_sshd

NAMES = ["dev1", "dev2", "dev 3 'odd'"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, project):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        original = (project / "devices.yml").read_bytes()
        shutil.copy(running.devices_yml, project / "devices.yml")
        yield running
        (project / "devices.yml").write_bytes(original)


def _last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_kedro_edge_devices_lists_every_device(project, fleet):
    result = kedro(project, "edge", "devices")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in NAMES:
        assert name in result.stdout
    assert result.stdout.count("x86_64") + result.stdout.count("aarch64") == 3


def test_deployment_pipeline_ships_the_validated_model_to_every_device(project, fleet):
    result = kedro(project, "run", "--pipelines", "deployment")
    assert result.returncode == 0, result.stderr[-3000:]
    model = (project / "data/06_models/model.onnx").read_bytes()
    sha = hashlib.sha256(model).hexdigest()
    report = json.loads((project / "data/08_reporting/device_benchmarks.json").read_text())
    assert report["summary"] == {"devices": 3, "ok": 3, "failed": 0}
    assert report["model"]["sha256"] == sha
    for name in NAMES:
        current = fleet.device(name)["workdir"] / "current" / "model.onnx"
        assert current.read_bytes() == model
    assert (project / "data/08_reporting/device_latency.png").read_bytes()[:4] == b"\x89PNG"
    # the INT8 model went lzma-compressed: fewer bytes on the wire than the file it became
    record = json.loads((project / "data/08_reporting/release.json").read_text())
    shipping = record["shipping"]
    assert shipping["codec"] == "lzma" and shipping["model_bytes"] == len(model)
    assert shipping["model_shipped_bytes"] < 0.9 * len(model)
    first_contact = len(AGENT_SOURCE)  # these devices also received the agent, once
    assert {d["bytes_sent"] for d in record["devices"]} == {shipping["shipped_bytes"] + first_contact}
    assert "shipped: " in (project / "data/08_reporting/release.md").read_text()


def _active(fleet, name: str) -> bytes:
    return (fleet.device(name)["workdir"] / "current" / "model.onnx").read_bytes()


def test_a_failed_wave_rolls_the_release_back_and_fails_the_run(project, fleet):
    released = _active(fleet, "dev1")
    # a new candidate (other calibration samples); waves: dev1 (canary), then dev2 and the rest
    new = kedro(
        project,
        "run",
        "--pipelines",
        "compression,validation",
        "--params",
        "compression.quantize.calibration_samples=40",
    )
    assert new.returncode == 0, new.stderr[-2000:]
    fleet.stop_device("dev2")
    try:
        # the canary's timing gate is not what this test is about: a ~50-us loopback model's p50 moved
        # 40% between runs on a busy CI machine once; the gate still runs (release.md's row below)
        tolerant = "deployment.regression.tolerance=3.0"
        result = kedro(project, "run", "--pipelines", "deployment", "--params", tolerant)
        devices = kedro(project, "edge", "devices")
    finally:
        fleet.start_device("dev2")
    assert result.returncode != 0
    assert _last_line(result).startswith("kedro-edge: error: release rolled_back (")
    assert "dev2: dev2 (" in _last_line(result) and "cannot connect" in _last_line(result)
    record = json.loads((project / "data/08_reporting/release.json").read_text())
    assert record["verdict"] == "rolled_back"
    assert {d["device"]: d["decision"] for d in record["devices"]}["dev1"] == "rolled back"
    assert _active(fleet, "dev1") == released  # the canary is back on the release it had
    assert "| no_regression |" in (project / "data/08_reporting/release.md").read_text()
    report = json.loads((project / "data/08_reporting/device_benchmarks.json").read_text())
    statuses = {d["device"]: d["status"] for d in report["devices"]}
    assert statuses["dev2"] == "failed"
    assert devices.returncode == 1 and "no: dev2" in devices.stdout


def test_a_model_that_did_not_pass_validation_is_not_shipped(project, fleet):
    record = project / "data/08_reporting/validated_model.json"
    original = record.read_text()
    tampered = json.loads(original)
    tampered["model"]["sha256"] = "0" * 64
    record.write_text(json.dumps(tampered))
    try:
        result = kedro(project, "run", "--pipelines", "deployment")
    finally:
        record.write_text(original)
    assert result.returncode != 0
    assert "is not the model that passed validation" in _last_line(result)


def test_status_and_rollback_commands(project, fleet):
    before = _active(fleet, "dev 3 'odd'")
    status = kedro(project, "edge", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("yes") == 3
    back = kedro(project, "edge", "rollback", "--devices", "dev 3 'odd'")
    assert back.returncode == 1  # it only ever had one release: rollback never leaves it empty-handed
    assert "nothing older to roll back to" in back.stdout
    assert _active(fleet, "dev 3 'odd'") == before
    sha = hashlib.sha256(before).hexdigest()
    again = kedro(project, "edge", "rollback", "--devices", "dev 3 'odd'", "--to", sha)
    assert again.returncode == 0 and _active(fleet, "dev 3 'odd'") == before
    forced = kedro(project, "edge", "rollback", "--force")
    assert forced.returncode == 2 and "--force needs --to" in forced.stderr
