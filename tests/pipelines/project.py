"""A temporary copy of the project on a tiny configuration, and helpers to run its commands."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "parameters_training.yml": {
        "data": {"seed": 1, "val_fraction": 0.15, "test_fraction": 0.2, "image_size": None},
        "model": {"class_path": "kedro_edge.models.ResidualCNN", "kwargs": {"widths": [16, 32]}},
        "training": {"epochs": 3, "batch_size": 64, "lr": 0.01, "patience": 3},
    },
    "parameters_compression.yml": {
        "compression": {
            # every technique on, so the whole chain runs: low-rank -> prune -> QAT -> distill ->
            # cluster -> INT8 (exclude: auto times layers on this host, so it is tested in
            # tests/test_nodes.py, not in a run whose figures these tests compare)
            "lowrank": {"enabled": True, "energy": 0.9, "finetune_epochs": 1},
            "prune": {"ratio": 0.5, "steps": 1, "finetune_epochs": 1},
            "quantize": {"calibration_samples": 64},
            "distill": {"epochs": 1},
            "cluster": {"enabled": True, "k": 8, "finetune_epochs": 1},
        }
    },
    "parameters_deployment.yml": {
        # tiny models (~30 us a query) on a shared CI machine: see tests/fleet/loopback.py
        "deployment": {"regression": {"tolerance": 0.3}, "parity_samples": 8}
    },
    "parameters_validation.yml": {
        "validation": {
            "metric": "top1",  # a param of dvc.yaml's search stage
            "latency": {"warmup": 2, "min_runs": 10, "min_seconds": 0},
            "gates": {
                "max_accuracy_drop": None,
                "max_robust_accuracy_drop": None,
                "min_size_reduction": 1.0,
                "min_agreement": None,
            },
        }
    },
}


# the default task, small: 600 glyphs at 12x12 (the full default is 20,000 at 32x32)
TINY_RAW = {"n_per_class": 60, "size": 12}


def env() -> dict[str, str]:
    """This interpreter's scripts first on PATH (DVC stages call `kedro`); no telemetry."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "COLUMNS": "200",
        "GIT_AUTHOR_NAME": "kedro-edge tests",
        "GIT_AUTHOR_EMAIL": "tests@kedro-edge.invalid",
        "GIT_COMMITTER_NAME": "kedro-edge tests",
        "GIT_COMMITTER_EMAIL": "tests@kedro-edge.invalid",
    }


def run(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True, timeout=900)


def kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", "kedro", *args)


def copy_project(dest: Path, with_dvc: bool = False) -> Path:
    """The project's files in ``dest`` with the tiny parameters (the code is the installed package)."""
    for name in ("pyproject.toml", ".telemetry", "devices.yml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("pipelines", "conf/base", "src"):
        skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / folder, dest / folder, ignore=skip)
    (dest / "conf" / "local").mkdir()
    for layer in (ROOT / "data").iterdir():
        (dest / "data" / layer.name).mkdir(parents=True)
        (dest / "data" / layer.name / ".gitkeep").touch()
    for name, params in TINY.items():
        (dest / "conf" / "base" / name).write_text(yaml.safe_dump(params, sort_keys=False))
    catalog_file = dest / "conf" / "base" / "catalog.yml"
    catalog = yaml.safe_load(catalog_file.read_text())
    catalog["raw_images"].update(TINY_RAW)
    catalog_file.write_text(yaml.safe_dump(catalog, sort_keys=False))
    if with_dvc:
        for name in ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
            (dest / name).parent.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, dest / name)
    return dest


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
