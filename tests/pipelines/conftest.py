"""The project copy that has run `kedro run` once, shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.project import copy_project, kedro


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A copy of the project (code is the installed package) that has run `kedro run` once."""
    dest = copy_project(tmp_path_factory.mktemp("project"))
    result = kedro(dest, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dest
