"""The project as a Dagster job (kedro-dagster), on Dagster's multiprocess executor: one process a node.

Runs the real `dagster job execute` CLI on `pipelines/definitions.py` in a temporary copy of the
project (tiny configuration), with a DAGSTER_HOME whose instance keeps runs and event logs in
SQLite, then reads that instance: the run, its steps and the process each step ran in. The model
it produces must be byte for byte the one `kedro run` produces from the same configuration.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.pipeline_registry import register_pipelines
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
