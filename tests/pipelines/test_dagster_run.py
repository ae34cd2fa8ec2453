"""The project as a Dagster job (kedro-dagster), on Dagster's multiprocess executor: one process a node.

Runs the real `dagster job execute` CLI on `pipelines/definitions.py` in a temporary copy of the
project (tiny configuration), with a DAGSTER_HOME whose instance keeps runs and event logs in
SQLite, then reads that instance: the run, its steps and the process each step ran in. The model
it produces must be byte for byte the one `kedro run` produces from the same configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.pipeline_registry import register_pipelines
from tests.conftest import needs_sshd
from tests.pipelines.project import copy_project, env, kedro, sha

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="kedro-dagster 0.8.1 needs Python 3.11+")

MODEL = "data/06_models/model.onnx"
JOB = "local__model"  # dagster.yml's `model` job, prefixed by the Kedro env (KEDRO_ENV, default local)
HOOK_STEPS = {"before_pipeline_run_hook_model", "after_pipeline_run_hook_model"}


def instance_yaml(home: Path) -> str:
    """A Dagster instance with persistent storage: the multiprocess executor needs one."""
    storage = {"sqlite": {"base_dir": str(home / "storage")}}
    return yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}})


@pytest.fixture(scope="module")
def kedro_model(tmp_path_factory) -> str:
    """sha256 of model.onnx after `kedro run` of training, compression and validation."""
    project = copy_project(tmp_path_factory.mktemp("kedro"))
    result = kedro(project, "run", "--pipelines", "training,compression,validation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sha(project / MODEL)


@pytest.fixture(scope="module")
def dagster_run(tmp_path_factory):
    """The copy of the project, and the events of its run of the model job through `dagster job execute`."""
    from dagster import DagsterInstance, DagsterRunStatus

    project = copy_project(tmp_path_factory.mktemp("dagster"))
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(instance_yaml(home))
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [dagster, "job", "execute", "-m", "pipelines.definitions", "-d", project, "-j", JOB]
    result = subprocess.run(
        cmd,
        cwd=project,
        env={**env(), "DAGSTER_HOME": str(home), "KEDRO_ENV": "local"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    instance = DagsterInstance.from_config(str(home))
    (record,) = instance.get_run_records()
    assert (record.dagster_run.job_name, record.dagster_run.status) == (JOB, DagsterRunStatus.SUCCESS)
    events = [e.dagster_event for e in instance.all_logs(record.dagster_run.run_id) if e.is_dagster_event]
    return project, events


def started(events) -> dict[str, int]:
    """Each step that started, and the process it ran in."""
    return {e.step_key: e.pid for e in events if e.event_type_value == "STEP_START"}


def test_the_job_runs_the_three_pipelines_and_kedro_hooks(dagster_run):
    project, events = dagster_run
    pipes = register_pipelines()
    nodes = {n.name for name in ("training", "compression", "validation") for n in pipes[name].nodes}
    # a step a node (its Kedro node hooks run in it), and the ops that call before/after_pipeline_run
    assert set(started(events)) == nodes | HOOK_STEPS
    assert (project / "data" / "08_reporting" / "validated_model.json").is_file()  # the gates passed


def test_every_step_ran_in_a_process_of_its_own(dagster_run):
    _, events = dagster_run
    (executor,) = [e for e in events if "using multiprocess executor" in (e.message or "")]
    pids = list(started(events).values())
    assert len(set(pids)) == len(pids), "two steps shared a process"
    assert executor.pid not in pids, "a step ran in the executor's own process"


def test_the_model_is_byte_identical_to_kedro_runs(dagster_run, kedro_model):
    project, _ = dagster_run
    assert sha(project / MODEL) == kedro_model


# --- the deployment as a sharded release: each wave's batches as steps ---------------------------
SHARDED = {
    "deployment": {"waves": [1, "100%"], "shard_size": 2, "regression": {"enabled": False, "blocks": 3}}
}
FLEET = ["d0", "d1", "d2", "d3", "d4"]


@pytest.fixture(scope="module")
def sharded_release(dagster_run, tmp_path_factory):
    """The model job's project, its devices.yml a loopback fleet of 5 real sshd, released by the
    sharded job: the run's step events, and the fleet (still running)."""
    from kedro_edge.testing import start_fleet

    project, _ = dagster_run
    with start_fleet(tmp_path_factory.mktemp("fleet"), FLEET, port=0) as fleet:
        devices = yaml.safe_load(fleet.devices_yml.read_text())
        devices["groups"]["loopback"].update({"warmup": 0, "min_runs": 20, "min_seconds": 0.0})
        (project / "devices.yml").write_text(yaml.safe_dump(devices))
        (project / "conf" / "local" / "parameters_deployment.yml").write_text(yaml.safe_dump(SHARDED))
        yield run_job(project, tmp_path_factory.mktemp("dagster_home"), "local__sharded_release"), fleet


def run_job(project: Path, home: Path, job: str) -> list:
    """`dagster job execute` of ``job`` in ``project``: the run's Dagster events (it must succeed)."""
    from dagster import DagsterInstance, DagsterRunStatus

    (home / "dagster.yaml").write_text(instance_yaml(home))
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [dagster, "job", "execute", "-m", "pipelines.definitions", "-d", project, "-j", job]
    environment = {**env(), "DAGSTER_HOME": str(home), "KEDRO_ENV": "local"}
    result = subprocess.run(cmd, cwd=project, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (record,) = DagsterInstance.from_config(str(home)).get_run_records()
    assert (record.dagster_run.job_name, record.dagster_run.status) == (job, DagsterRunStatus.SUCCESS)
    logs = DagsterInstance.from_config(str(home)).all_logs(record.dagster_run.run_id)
    return [e.dagster_event for e in logs if e.is_dagster_event]


@needs_sshd
def test_a_sharded_release_runs_each_batch_as_a_step_and_writes_one_record(dagster_run, sharded_release):
    project, _ = dagster_run
    events, fleet = sharded_release
    steps = started(events)
    # wave 1: one batch (the canary); wave 2: the other four devices in two batches of 2
    assert sorted(s for s in steps if s.startswith(("wave1_prepare", "wave2_prepare"))) == [
        "wave1_prepare[batch0]", "wave2_prepare[batch0]", "wave2_prepare[batch1]",
    ]  # fmt: skip
    assert len(set(steps.values())) == len(steps), "two steps shared a process"
    record = json.loads((project / "data" / "08_reporting" / "release.json").read_text())
    assert record["verdict"] == "released"
    assert [(w["wave"], w["batches"], w["outcome"]) for w in record["waves"]] == [
        (1, 1, "passed"),
        (2, 2, "passed"),
    ]
    assert {d["device"]: d["decision"] for d in record["devices"]} == dict.fromkeys(FLEET, "activated")
    model = sha(project / MODEL)
    for name in FLEET:  # the bytes each device would load now are the model, under one rollout id
        workdir = fleet.device(name)["workdir"]
        assert sha(workdir / "current" / "model.onnx") == model
        last = json.loads((workdir / "history").read_text().splitlines()[-1])
        assert (last["event"], last["rollout"]) == ("released", record["rollout_id"])
        assert not (workdir / ".rollout").exists(), f"{name}: a lease was left behind"
    assert (project / "data" / "08_reporting" / "release.md").is_file()
