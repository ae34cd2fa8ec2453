"""The package's layers hold: `lint-imports` checks the contracts in pyproject.toml's [tool.importlinter]."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.pipelines.project import ROOT

LINT = str(Path(sys.executable).parent / "lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)


def test_every_import_contract_is_kept():
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_compression_importing_the_fleet_breaks_a_contract(tmp_path):
    shutil.copytree(
        ROOT / "src" / "kedro_edge", tmp_path / "kedro_edge", ignore=shutil.ignore_patterns("__pycache__")
    )
    with open(tmp_path / "kedro_edge" / "compress" / "prune.py", "a") as f:
        f.write("\nfrom kedro_edge.fleet import inventory  # noqa: E402,F401\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "kedro_edge.compress.prune -> kedro_edge.fleet.inventory" in result.stdout
