"""DVC over the Kedro pipelines, in a temporary git + DVC copy of the project (tiny configuration).

Real git, real DVC, a local directory as the remote.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from kedro_edge.lineage.deps import check
from kedro_edge.lineage.versioning import artifact_version, file_hashes
from pipelines.pipeline_registry import register_pipelines
from tests.pipelines.project import copy_project, run, sha

MODEL = "data/06_models/model.onnx"
STAGES = ("training", "search", "compression", "validation")


def dvc(repo: Path, *args: str):
    result = run(repo, sys.executable, "-m", "dvc", *args)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def git(repo: Path, *args: str):
    result = run(repo, "git", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ran(result) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in result.stdout}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository of the project after one `dvc repro`, with dvc.lock committed."""
    root = copy_project(tmp_path_factory.mktemp("dvcrepo"), with_dvc=True)
    remote = tmp_path_factory.mktemp("remote")
    git(root, "init", "-q", "-b", "main")
    dvc(root, "remote", "modify", "--local", "local", "url", str(remote))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    first = dvc(root, "repro")
    assert ran(first) == set(STAGES)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "dvc repro")
    return root


def test_repro_produces_the_kedro_artifacts_and_locks_them(repo):
    for path in ("data/06_models/teacher.onnx", MODEL, "data/08_reporting/compression_metrics.json"):
        assert (repo / path).is_file(), path
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    assert outs[MODEL] == file_hashes(repo / MODEL)["md5"]
    # metrics are in git, models are not
    tracked = git(repo, "ls-files").split()
    assert "data/08_reporting/compression_metrics.json" in tracked
    assert MODEL not in tracked


def test_second_repro_runs_nothing(repo):
    again = dvc(repo, "repro")
    assert ran(again) == set()
    assert "up to date" in again.stdout


def test_an_edit_to_any_module_a_stage_runs_makes_dvc_status_list_that_stage(repo):
    """Every project file a stage's `kedro run` runs (kedro_edge.lineage.deps), edited by a comment
    alone, makes real DVC list that stage: nothing a stage ran is reused stale."""
    from dvc.repo import Repo

    code = {stage: set(f["code"]) for stage, f in check(repo, register_pipelines()).items()}
    assert set(code) == set(STAGES)
    with Repo(str(repo)) as project:
        assert project.status() == {}
        for path in sorted(set().union(*code.values())):
            original = (repo / path).read_bytes()
            (repo / path).write_bytes(original + b"\n# an edit\n")
            try:
                listed = {key.rsplit(":", 1)[-1] for key in project.status()}  # <dvc.yaml path>:<stage>
            finally:
                (repo / path).write_bytes(original)
            assert listed >= {stage for stage, files in code.items() if path in files}, path
        assert project.status() == {}


def test_a_compression_parameter_invalidates_the_plan_first(repo):
    params = repo / "conf/base/parameters_compression.yml"
    original = params.read_text()
    changed = yaml.safe_load(original)
    changed["compression"]["prune"]["ratio"] = 0.25
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        status = json.loads(dvc(repo, "status", "--json").stdout)
    finally:
        params.write_text(original)
    # the search stage writes the plan; compression and validation follow when it changes
    assert set(status) == {"search"}


def test_search_settings_rerun_the_search_stage_and_nothing_else_when_the_plan_stays(repo):
    params = repo / "conf/base/parameters_compression.yml"
    original = params.read_text()
    changed = yaml.safe_load(original)
    changed["compression"]["search"] = {"trials": 7}  # the search stays off: the plan is the same
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        assert set(json.loads(dvc(repo, "status", "--json").stdout)) == {"search"}
        assert ran(dvc(repo, "repro")) == {"search"}  # same plan file: the models are not rebuilt
    finally:
        params.write_text(original)
        dvc(repo, "repro")
    assert git(repo, "status", "--porcelain", "dvc.lock") == ""


def test_push_then_pull_restores_a_deleted_model(repo):
    before = sha(repo / MODEL)
    dvc(repo, "push")
    (repo / MODEL).unlink()
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc(repo, "pull")
    assert sha(repo / MODEL) == before


def test_version_record_names_the_dvc_hash_and_git_revision(repo):
    version = artifact_version(repo, MODEL)
    assert version["dvc_tracked"] is True
    assert version["dvc_md5"] == file_hashes(repo / MODEL)["md5"]
    assert version["git_rev"] == git(repo, "rev-parse", "HEAD").strip()
    assert version["sha256"] == sha(repo / MODEL)
    assert version["local_overrides"] == []  # conf/local has no files


def test_the_version_record_lists_the_conf_local_settings_in_force(repo):
    local = repo / "conf" / "local" / "parameters_validation.yml"
    local.write_text("validation: {batch_size: 64}\n")
    try:
        assert artifact_version(repo, MODEL)["local_overrides"] == [
            "validation.batch_size (conf/local/parameters_validation.yml)"
        ]
    finally:
        local.unlink()


def test_exp_run_with_a_changed_parameter_changes_the_metrics(repo):
    exp = dvc(repo, "exp", "run", "-S", "conf/base/parameters_compression.yml:compression.prune.ratio=0.25")
    assert ran(exp) == {"search", "compression", "validation"}
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    metrics = diff["data/08_reporting/compression_metrics.json"]
    macs = metrics["stages.int8.macs"]
    assert macs["new"] > macs["old"]  # a quarter of the channels removed instead of half
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    assert "0.25" in json.dumps(shown)
    # the file the experiment used is the file in conf/base: no params.yaml copy
    assert (
        yaml.safe_load((repo / "conf/base/parameters_compression.yml").read_text())["compression"]["prune"][
            "ratio"
        ]
        == 0.25
    )
    assert not (repo / "params.yaml").exists()
