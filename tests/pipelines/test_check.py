"""`kedro edge check`: each stage against the configured model, without training."""

from __future__ import annotations

import numpy as np

from kedro_edge.nodes.check import check_stages
from tests.pipelines.project import TINY, copy_project, kedro

COMPRESSION = TINY["parameters_compression.yml"]["compression"]
TRAINING = {"epochs": 1, "batch_size": 16}


def test_the_command_prints_a_row_per_stage_and_writes_nothing(tmp_path):
    dest = copy_project(tmp_path)
    result = kedro(dest, "edge", "check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 5}
    for stage in ("teacher", "lowrank", "prune", "quantize", "distill", "cluster", "export"):
        assert "│ yes" in rows[stage], (stage, result.stdout)
    assert "INT8 ONNX:" in rows["export"] and "50% of each layer's channels" in rows["prune"]
    assert not any((dest / "data" / "06_models").glob("*.pt"))  # nothing written


def _images(channels: int = 3, n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        out[f"x_{split}"] = rng.random((n, channels, 32, 32), dtype=np.float32)
        out[f"y_{split}"] = np.arange(n) % 10
    return out


def test_a_model_pruning_cannot_take_gets_a_no_and_the_rest_still_applies():
    model = {"class_path": "torchvision.models.shufflenet_v2_x0_5"}
    rows = {r.stage: r for r in check_stages(_images(), model, TRAINING, COMPRESSION)}
    assert not rows["prune"].applies and "ZeroDivisionError" in rows["prune"].detail
    assert rows["quantize"].applies and rows["export"].applies
    assert rows["teacher"].macs > 0 and rows["export"].detail.startswith("INT8 ONNX:")


def test_a_vit_prunes_heads_in_the_check():
    vit = {"model_name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2}
    model = {"class_path": "timm.create_model", "kwargs": vit}
    rows = {r.stage: r for r in check_stages(_images(), model, TRAINING, COMPRESSION)}
    assert rows["prune"].applies and "heads left" in rows["prune"].detail
    assert rows["prune"].macs < rows["teacher"].macs
