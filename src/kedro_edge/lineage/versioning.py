"""Which version an artifact is: its content hashes, DVC's record of it, and the git revision.

The fleet manifest and the release record carry this, so any release can be brought back:
``git checkout <git_rev> && dvc checkout`` restores the model whose ``dvc_md5`` it names.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kedro_edge.param_sources import local_overrides


def file_hashes(path: Path) -> dict[str, Any]:
    """sha256 (what devices verify), md5 (DVC's content hash of a file) and size."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "size_bytes": size}


def dvc_locked_md5(root: Path, relpath: str) -> str | None:
    """The md5 ``dvc.lock`` records for the stage output ``relpath``, if any stage has it."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == relpath:
                return out.get("md5")
    return None


def git_revision(root: Path) -> dict[str, Any]:
    """HEAD's commit and whether the work tree differs from it (None outside a git repo)."""
    rev = git(root, "rev-parse", "HEAD")
    status = git(root, "status", "--porcelain", "--untracked-files=no") if rev else None
    return {"git_rev": rev, "git_dirty": bool(status) if rev else None}


def git(root: Path, *args: str) -> str | None:
    """``git -C root args`` (an argument list, no shell): its output, or None if it failed."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def artifact_version(root: Path, relpath: str) -> dict[str, Any]:
    """Everything that identifies ``root / relpath``; ``dvc_tracked`` says dvc.lock agrees with the file."""
    hashes = file_hashes(root / relpath)
    locked = dvc_locked_md5(root, relpath)
    return {
        "path": relpath,
        **hashes,
        "dvc_md5": locked,
        "dvc_tracked": locked == hashes["md5"],
        **git_revision(root),
        "local_overrides": local_overrides(root),  # conf/local settings DVC's params do not see
    }
