"""`kedro edge lineage` in a temporary git + DVC copy of the project with a loopback SSH fleet:
two revisions (another parameter in the second), each reproduced by `dvc repro` and released;
then each device's current and previous model is traced back to its revision and parameters,
and the first release's model is restored, and rebuilt, byte for byte in a worktree of its own."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import needs_sshd
from tests.pipelines.project import copy_project, kedro, run

pytestmark = needs_sshd

MODEL = "data/06_models/model.onnx"
PARAMS = "conf/base/parameters_compression.yml"


def ok(result):
    assert result.returncode == 0, f"{result.args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two commits of the project, each `dvc repro`-ed, committed and released to two devices."""
    from kedro_edge.testing import start_fleet

    root = copy_project(tmp_path_factory.mktemp("lineage"), with_dvc=True)
    remote = tmp_path_factory.mktemp("remote")
    with start_fleet(tmp_path_factory.mktemp("fleet"), ["dev1", "dev2"], port=0) as fleet:
        shutil.copy(fleet.devices_yml, root / "devices.yml")
        ok(run(root, "git", "init", "-q", "-b", "main"))
        ok(run(root, sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url", str(remote)))
        ok(run(root, "git", "add", "-A"))
        ok(run(root, "git", "commit", "-qm", "project"))
        revisions, models = [], []
        for samples in (64, 48):  # the second revision calibrates INT8 on other images: another model
            params = yaml.safe_load((root / PARAMS).read_text())
            params["compression"]["quantize"]["calibration_samples"] = samples
            (root / PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
            ok(run(root, sys.executable, "-m", "dvc", "repro"))
            ok(run(root, "git", "add", "-A"))
            ok(run(root, "git", "commit", "-qm", f"calibration_samples {samples}"))
            revisions.append(ok(run(root, "git", "rev-parse", "HEAD")).strip())
            models.append(sha(root / MODEL))
            ok(kedro(root, "run", "--pipelines", "deployment"))
            ok(run(root, "git", "add", "-A"))
            ok(run(root, "git", "commit", "-qm", "release"))
        yield root, fleet, revisions, models


def lineage(root: Path, sha: str) -> dict:
    out = ok(kedro(root, "edge", "lineage", sha[:10], "--json"))
    return json.loads(out[out.index("\n{") :])  # after Kedro's own "Using ... logging" line


def test_each_devices_current_model_traces_back_to_its_revision_and_parameters(history):
    root, fleet, revisions, models = history
    assert models[0] != models[1]
    found = lineage(root, models[1])
    assert found["sha256"] == models[1]
    assert found["locked_in"]["commit"] == revisions[1] and found["locked_in"]["stage"] == "compression"
    assert found["locked_in"]["params"]["compression.quantize.calibration_samples"] == 48
    # built before the parameter change was committed: dirty, at the first release's commit
    assert found["version"]["git_dirty"] is True and found["version"]["git_rev"] not in revisions
    assert found["revision"]["figures"]["n"] > 0  # the validation figures of that revision
    assert "recipe" in found["revision"]  # the search was off: conf/base's recipe made it
    assert [(r["verdict"], r["role"]) for r in found["releases"]] == [("released", "candidate")]
    for device in found["fleet"]:
        assert device["holds"] and device["active"] and device["standing_release"]
        assert [e["event"] for e in device["events"]] == ["released"]
    for name in ("dev1", "dev2"):
        assert sha(fleet.device(name)["workdir"] / "current" / "model.onnx") == models[1]


def test_each_devices_previous_model_traces_back_to_the_first_revision(history):
    root, _, revisions, models = history
    found = lineage(root, models[0])
    assert found["locked_in"]["commit"] == revisions[0]
    assert found["locked_in"]["params"]["compression.quantize.calibration_samples"] == 64
    # built from a clean tree (the tiny project calibrates on 64 images already)
    assert found["version"]["git_dirty"] is False and found["version"]["git_rev"] != revisions[0]
    # released first, then replaced by the second release; every verdict involving it, in order
    assert [(r["verdict"], r["role"]) for r in found["releases"]] == [
        ("released", "candidate"),
        ("released", "replaced"),
    ]
    for device in found["fleet"]:
        assert device["holds"] and device["previous"] and not device["active"]


def test_an_unknown_or_ambiguous_prefix_is_one_line_naming_it(history):
    root, *_ = history
    result = kedro(root, "edge", "lineage", "0000000000", "--offline")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: no model with sha256 0000000000… in this repository's records or on the fleet"
    )


def test_restore_checks_the_first_releases_model_out_and_rebuilds_it_byte_for_byte(history, tmp_path):
    root, _, revisions, models = history
    restored = ok(kedro(root, "edge", "lineage", "--restore", models[0][:10], "--into", str(tmp_path / "a")))
    assert "sha256 verified" in restored and "dvc checkout (the cache)" in restored
    assert sha(tmp_path / "a" / MODEL) == models[0]
    assert ok(run(tmp_path / "a", "git", "rev-parse", "HEAD")).strip() == revisions[0]
    assert sha(root / MODEL) == models[1]  # the main work tree is untouched
    args = ("edge", "lineage", "--restore", models[0][:10], "--rebuild", "--into", str(tmp_path / "b"))
    rebuilt = ok(kedro(root, *args))
    assert "dvc repro --force" in rebuilt and sha(tmp_path / "b" / MODEL) == models[0]
