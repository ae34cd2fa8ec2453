"""`kedro run --pipelines search` in a copy of the tiny project: the search's choice goes through the
rest of the pipeline; a budget nobody meets stops the run with the record written and model.onnx kept."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from kedro_edge.config import CompressionParams
from tests.pipelines.project import TINY, kedro, sha

SEARCH = {
    "trials": 2, "batch": 2, "finetune_epochs": 1, "storage": "journal:data/07_model_output/search.log",
    "latency": {"blocks": 2, "min_runs": 10, "min_seconds": 0.0, "warmup": 2},
}  # fmt: skip


@pytest.fixture
def searching(project, tmp_path):
    """A copy of the project that has run once, and a function that runs the search pipeline in it."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".edge-device", ".kedro-edge"))

    def run(**search) -> tuple:
        compression = {**TINY["parameters_compression.yml"]["compression"], "search": {**SEARCH, **search}}
        local = copy / "conf" / "local" / "parameters_compression.yml"
        local.write_text(yaml.safe_dump({"compression": compression}))
        return copy, kedro(copy, "run", "--pipelines", "search")

    return run


def test_the_searched_recipe_is_what_the_rest_of_the_pipeline_runs(searching):
    project, result = searching(budget={"max_accuracy_drop": 100.0})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = project / "data" / "08_reporting"
    record = json.loads((reports / "search.json").read_text())
    assert record["outcome"] == "chosen" and len(record["trials"]) == 2
    assert (reports / "search.png").read_bytes()[:4] == b"\x89PNG"
    plan = json.loads((project / "data" / "05_model_input" / "compression_plan.json").read_text())
    assert plan == CompressionParams.model_validate(record["chosen"]["recipe"]).model_dump(mode="json")
    assert plan["prune"]["layer_ratios"]  # per-stage ratios, not one global one
    pruned = json.loads((reports / "prune_report.json").read_text())
    assert pruned["method"] == "structured" and pruned["after"]["macs"] < pruned["before"]["macs"]
    validated = json.loads((reports / "validated_model.json").read_text())
    assert validated["model"]["sha256"] == sha(project / "data" / "06_models" / "model.onnx")


def test_a_budget_no_candidate_meets_stops_the_run_and_keeps_model_onnx(searching):
    project, _ = searching(trials=1, budget={"max_accuracy_drop": 100.0})  # a good model.onnx first
    model = project / "data" / "06_models" / "model.onnx"
    before = sha(model)
    project, result = searching(
        study="impossible", budget={"max_accuracy_drop": 0.0}, space={"keep": [0.2, 0.25], "width": [0.5]}
    )
    assert result.returncode != 0
    said = [line for line in (result.stdout + result.stderr).splitlines() if "no candidate within" in line]
    assert said and "0.0 validation points" in said[-1] and "model.onnx is unchanged" in said[-1]
    record = json.loads((project / "data" / "08_reporting" / "search.json").read_text())
    assert record["outcome"] == "no candidate met the budget" and record["study"] == "impossible"
    assert sha(model) == before


def test_an_unknown_target_group_is_one_line_naming_the_key(searching):
    project, result = searching(target="no-such-group")
    assert result.returncode != 0
    assert "compression.search.target" in result.stderr + result.stdout
    assert "no group 'no-such-group' in devices.yml" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
