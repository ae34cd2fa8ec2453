"""End to end on tabular data: a CSV of feature vectors, an MLP, and the full `kedro run`.

scikit-learn's bundled breast-cancer table (569 rows, 30 features; no download) goes in
through ``TabularDataset`` in ``conf/local/catalog.yml``; the model section is replaced in
``conf/local/parameters_training.yml``. Training, compression, validation and deployment
to the local device all run on (N, F) inputs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from sklearn.datasets import load_breast_cancer

from tests.pipelines.project import copy_project, kedro

HIDDEN = [64, 32]

LOCAL = {
    "catalog.yml": {
        "raw_images": {
            "type": "kedro_edge.io.TabularDataset",
            "filepath": "data/01_raw/cancer.csv",
            "label": "diagnosis",
        }
    },
    "parameters_training.yml": {
        "model": {"class_path": "kedro_edge.models.MLP", "kwargs": {"hidden": HIDDEN, "dropout": 0.1}},
        "training": {"epochs": 20, "batch_size": 32, "lr": 0.003, "patience": 5},
    },
    "parameters_compression.yml": {
        "compression": {
            "lowrank": {"enabled": False},  # the widths asserted below are the pruned MLP's own
            "prune": {"ratio": 0.5, "steps": 2, "finetune_epochs": 3},
            "quantize": {"calibration_samples": 128},
            "distill": {"epochs": 5},
        }
    },
}


def _write_csv(path: Path) -> np.ndarray:
    bunch = load_breast_cancer()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*bunch.feature_names, "diagnosis"])
        for row, label in zip(bunch.data, bunch.target, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), int(label)])
    return bunch.data


@pytest.fixture(scope="module")
def tabular_project(tmp_path_factory) -> tuple[Path, np.ndarray]:
    project = copy_project(tmp_path_factory.mktemp("tabular"))
    raw = _write_csv(project / "data" / "01_raw" / "cancer.csv")
    for name, content in LOCAL.items():
        (project / "conf" / "local" / name).write_text(yaml.safe_dump(content, sort_keys=False))
    result = kedro(project, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project, raw


def test_features_are_standardised_with_statistics_of_the_training_rows_only(tabular_project):
    project, raw = tabular_project
    with np.load(project / "data" / "05_model_input" / "splits.npz") as npz:
        splits = {k: npz[k] for k in npz.files}
    mean, std = splits["feature_mean"], splits["feature_std"]
    assert mean.shape == std.shape == (30,)
    # undo the scaling: each training row must be a row of the CSV, and their mean the stored mean
    rows = splits["x_train"].astype(np.float64) * std + mean
    nearest = np.abs(rows[:, None, :] - raw[None, :, :]).max(axis=2).argmin(axis=1)
    np.testing.assert_allclose(rows, raw[nearest], rtol=1e-4, atol=1e-3)
    assert len(set(nearest)) == len(rows)
    train_rows = raw[nearest]
    np.testing.assert_allclose(mean, train_rows.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(std, train_rows.std(axis=0), rtol=1e-4)
    assert not np.allclose(mean, raw.mean(axis=0), rtol=1e-4)  # not fitted on all rows
    n = sum(len(splits[f"y_{s}"]) for s in ("train", "val", "test"))
    assert n == len(raw) and splits["x_test"].shape[1:] == (30,)


def test_neurons_are_removed_and_model_onnx_is_int8(tabular_project):
    project, _ = tabular_project
    models, reports = project / "data" / "06_models", project / "data" / "08_reporting"
    pruned = torch.load(models / "pruned.pt", weights_only=False)
    hidden = [m.out_features for m in pruned.modules() if isinstance(m, torch.nn.Linear)][:-1]
    assert all(h < w for h, w in zip(hidden, HIDDEN, strict=True)), hidden

    stages = json.loads((reports / "compression_metrics.json").read_text())["stages"]
    assert stages["pruned"]["macs"] < 0.5 * stages["teacher"]["macs"]
    assert stages["int8"]["macs"] == stages["pruned"]["macs"]
    assert stages["teacher"]["accuracy"] >= 0.9 and stages["int8"]["accuracy"] >= 0.9

    int8 = onnx.load(models / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in int8.graph.node}
    dims = int8.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 30]


def test_the_feature_model_is_released_to_the_local_device(tabular_project):
    project, _ = tabular_project
    reports = project / "data" / "08_reporting"
    record = json.loads((reports / "release.json").read_text())
    assert record["verdict"] == "released", record
    benchmarks = json.loads((reports / "device_benchmarks.json").read_text())
    assert benchmarks["devices"], benchmarks
