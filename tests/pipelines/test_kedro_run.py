"""End to end: `kedro run` in a temporary copy of the project, on a tiny configuration.

Runs the real CLI in a subprocess, so exit codes and what the user reads are tested too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from tests.pipelines.project import kedro, sha


def test_run_leaves_the_artifact_contract(project):
    models, reports = project / "data" / "06_models", project / "data" / "08_reporting"
    for name in (
        "teacher.onnx",
        "model.onnx",
        "teacher.pt",
        "lowrank.pt",
        "pruned.pt",
        "student.pt",
        "clustered.pt",
    ):
        assert (models / name).stat().st_size > 0, name
    assert (reports / "compression.png").read_bytes()[:4] == b"\x89PNG"

    metrics = json.loads((reports / "compression_metrics.json").read_text())
    assert list(metrics["stages"]) == ["teacher", "lowrank", "pruned", "distilled", "clustered", "int8"]
    assert metrics["final_stage"] == "int8"
    for figures in metrics["stages"].values():
        for key in ("accuracy", "size_bytes", "params", "macs", "latency_p50_ms", "latency_p90_ms"):
            assert figures[key] > 0, key
    stages = metrics["stages"]
    assert stages["pruned"]["macs"] < 0.5 * stages["teacher"]["macs"]
    # at this size the INT8 file's Q/DQ node names outweigh its 4x smaller weights; what it ships does not
    assert stages["int8"]["shipped_bytes"] < 0.5 * stages["pruned"]["shipped_bytes"]
    # clustered: 8 values a layer, which lzma packs
    assert stages["clustered"]["shipped_bytes"] < 0.5 * stages["distilled"]["shipped_bytes"]
    assert stages["int8"]["size_bytes"] == (models / "model.onnx").stat().st_size
    assert stages["lowrank"]["macs"] < stages["teacher"]["macs"]  # factorised layers cost fewer MACs
    assert stages["int8"]["shipped_bytes"] < 0.5 * stages["int8"]["size_bytes"]  # 8 values: lzma packs them
    lowrank = json.loads((reports / "lowrank_report.json").read_text())
    assert lowrank["layers"] and all(layer["rank"] < layer["full_rank"] for layer in lowrank["layers"])
    clustered = json.loads((reports / "cluster_report.json").read_text())
    assert clustered["layers"] and all(layer["distinct_after_finetune"] <= 8 for layer in clustered["layers"])
    quantized = json.loads((reports / "quantize_report.json").read_text())
    assert quantized["quantized"] and isinstance(quantized["exclude"], list)
    assert {g["gate"] for g in metrics["gates"]} == {"min_size_reduction"}
    assert metrics["passed"] is True

    int8 = onnx.load(models / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    onnx.checker.check_model(int8, full_check=True)


def test_pipelines_run_separately(project):
    before = sha(project / "data" / "06_models" / "teacher.pt")
    result = kedro(project, "run", "--pipelines", "validation")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sha(project / "data" / "06_models" / "teacher.pt") == before  # training did not re-run


def _fails_in_one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kedro-edge: error: "), result.stderr[-2000:]
    for needle in needles:
        assert needle in last, last
    assert "Traceback" not in result.stderr
    return last


@pytest.mark.parametrize(
    ("params", "needles"),
    [
        ("compression.prune.ratoi=0.5", ["--params: unknown parameter key 'compression.prune.ratoi'"]),
        ("compression.prune.ratio=1.5", ["--params: parameter 'compression.prune.ratio'"]),
        ("training.epochs=0", ["'training.epochs'", "greater than or equal to 1"]),
        ("model.class_path=nowhere.Model", ["'model.class_path'", "cannot import 'nowhere.Model'"]),
    ],
)
def test_bad_parameters_fail_in_one_line_and_keep_the_model(project, params, needles):
    model = project / "data" / "06_models" / "model.onnx"
    before = sha(model)
    _fails_in_one_line(kedro(project, "run", "--params", params), *needles)
    assert sha(model) == before


def _with_raw_data(project: Path, filepath: str):
    catalog = {"raw_images": {"type": "kedro_edge.io.ImageNpzDataset", "filepath": filepath}}
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(catalog))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "file not found"),
        (b"PK\x03\x04 truncated zip", "cannot read"),
        (
            {"images": np.zeros((40, 8, 8)), "labels": np.zeros(40, np.float32)},
            "'labels' must be 1-D integers",
        ),
        ({"images": np.zeros((40, 8)), "labels": np.arange(40) % 4}, "'images' must be (N, H, W)"),
        ({"images": np.full((40, 8, 8), np.nan), "labels": np.arange(40) % 4}, "NaN"),
        ({"pictures": np.zeros((40, 8, 8)), "labels": np.arange(40) % 4}, "no array named 'images'"),
    ],
)
def test_bad_data_files_fail_in_one_line_naming_the_file(project, content, needle):
    raw = project / "data" / "01_raw" / "mine.npz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.unlink(missing_ok=True)
    if isinstance(content, bytes):
        raw.write_bytes(content)
    elif content is not None:
        np.savez(raw, **content)
    splits = project / "data" / "05_model_input" / "splits.npz"
    before = sha(splits)
    _with_raw_data(project, "data/01_raw/mine.npz")
    try:
        _fails_in_one_line(kedro(project, "run", "--pipelines", "training"), "data/01_raw/mine.npz", needle)
    finally:
        (project / "conf" / "local" / "catalog.yml").unlink()
    assert sha(splits) == before


def test_own_npz_data_runs_through_the_catalog(project):
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    images = (rng.random((120, 10, 10)) * 60 + labels[:, None, None] * 80).astype(np.uint8)
    raw = project / "data" / "01_raw" / "own.npz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    np.savez(raw, images=images, labels=labels)
    splits = project / "data" / "05_model_input" / "splits.npz"
    store = splits.with_name("images.npy")
    digits = splits.read_bytes(), store.read_bytes()  # the other tests run on the digits splits
    _with_raw_data(project, "data/01_raw/own.npz")
    try:
        result = kedro(project, "run", "--to-nodes", "split_dataset")
        assert result.returncode == 0, result.stderr[-2000:]
        pixels = np.load(store, mmap_mode="r")
        assert pixels.dtype == np.uint8 and pixels.shape == (120, 1, 10, 10)  # the pixels, kept as pixels
        with np.load(splits) as npz:
            assert set(npz["y_test"]) == {0, 1, 2} and len(npz["index_train"]) == len(npz["y_train"])
    finally:
        (project / "conf" / "local" / "catalog.yml").unlink()
        splits.write_bytes(digits[0])
        store.write_bytes(digits[1])


def test_a_refused_gate_fails_after_writing_the_figures(project):
    reports = project / "data" / "08_reporting"
    (reports / "compression.png").unlink()
    result = kedro(
        project, "run", "--pipelines", "validation", "--params", "validation.gates.min_size_reduction=1000"
    )
    _fails_in_one_line(result, "gate 'min_size_reduction' refused model.onnx")
    metrics = json.loads((reports / "compression_metrics.json").read_text())
    assert metrics["passed"] is False
    assert (reports / "compression.png").exists()


def test_the_accuracy_gate_refuses_with_the_paired_figure_interval_and_n(project):
    result = kedro(
        project, "run", "--pipelines", "validation", "--params", "validation.gates.max_accuracy_drop=0"
    )
    last = _fails_in_one_line(result, "gate 'max_accuracy_drop' refused model.onnx: accuracy drop")
    metrics = json.loads((project / "data" / "08_reporting" / "compression_metrics.json").read_text())
    n = metrics["test_n"]
    assert f"n={n}" in last and "paired 95% CI [" in last and "McNemar p=" in last
    assert "upper 95% bound" in last  # judged on the interval, not the point
    int8 = metrics["stages"]["int8"]
    assert int8["n"] == n and len(int8["accuracy_ci"]) == 2
    assert int8["robust_accuracy_ci"][0] <= int8["robust_accuracy"] <= int8["robust_accuracy_ci"][1]
    assert set(int8["vs_teacher"]) == {"clean", "robust"} and int8["vs_previous"]["stage"] == "clustered"
    assert "what each stage bought" in result.stdout  # the closing table, also when a gate refuses
