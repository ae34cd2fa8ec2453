"""The second bundled task end to end: `kedro run --env segmentation` on tiny glyphs.

The environment's own files (``conf/segmentation``) are copied as shipped; the test shrinks only
the data, the model's widths and the epochs (the test project's base ones), and leaves the gates
judging mean IoU (any loss allowed: a few epochs on 16x16 images prove the wiring, not the figures).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from tests.pipelines.project import ROOT, copy_project, kedro

WIDTHS = [8, 16, 32]


@pytest.fixture(scope="module")
def segmentation_project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("segmentation"))
    env = project / "conf" / "segmentation"
    shutil.copytree(ROOT / "conf" / "segmentation", env)
    catalog = yaml.safe_load((env / "catalog.yml").read_text())
    catalog["raw_images"].update({"n_per_class": 40, "size": 16})
    (env / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    params = yaml.safe_load((env / "parameters.yml").read_text())
    params["model"]["kwargs"]["widths"] = WIDTHS
    params.pop("training")  # the tiny project's epochs
    params["compression"].pop("prune")
    params["compression"].pop("distill")
    params["validation"]["gates"].update(
        max_metric_drop=100.0, max_robust_metric_drop=100.0, min_size_reduction=1.0
    )
    (env / "parameters.yml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = kedro(project, "run", "--env", "segmentation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


def test_the_split_keeps_a_mask_per_image_as_the_targets(segmentation_project):
    with np.load(segmentation_project / "data" / "05_model_input" / "splits.npz") as npz:
        assert str(npz["task"]) == "dense"
        y, index = npz["y_test"], npz["index_test"]
    assert y.shape == (len(index), 16, 16) and y.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1}  # off and on the letter's strokes


def test_the_int8_model_labels_every_pixel_and_channels_are_gone(segmentation_project):
    models = segmentation_project / "data" / "06_models"
    int8 = onnx.load(models / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in int8.graph.node}
    x = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32)
    out = ort.InferenceSession(int8.SerializeToString()).run(None, {int8.graph.input[0].name: x})[0]
    assert out.shape == (2, 2, 16, 16)
    pruned = torch.load(models / "pruned.pt", weights_only=False)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[-1] == 2 and max(widths[:-1]) < max(WIDTHS)  # the head keeps its classes


def test_compression_metrics_name_miou_and_give_it_per_stage_with_its_interval(segmentation_project):
    metrics = json.loads(
        (segmentation_project / "data" / "08_reporting" / "compression_metrics.json").read_text()
    )
    assert metrics["metric"] == {"name": "miou", "higher_is_better": True, "unit": "points", "scale": 100.0}
    for name, stage in metrics["stages"].items():
        low, high = stage["accuracy_ci"]
        assert 0 <= low <= stage["accuracy"] <= high <= 1, name
    final = metrics["stages"][metrics["final_stage"]]
    assert final["vs_teacher"]["clean"]["test"] == "bootstrap"
    assert {g["gate"] for g in metrics["gates"]} >= {"max_metric_drop", "max_robust_metric_drop"}
    assert not {"max_accuracy_drop", "max_robust_accuracy_drop"} & {g["gate"] for g in metrics["gates"]}
    assert metrics["stages"]["pruned"]["macs"] < metrics["stages"]["teacher"]["macs"]


def test_the_segmentation_model_is_released_to_the_local_device(segmentation_project):
    record = json.loads((segmentation_project / "data" / "08_reporting" / "release.json").read_text())
    assert record["verdict"] == "released", record
