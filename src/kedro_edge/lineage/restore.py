"""A model's revision in a git worktree of its own, its bytes restored by DVC and checked.

The commit is the one whose ``dvc.lock`` pins the model (``history.locked_in``). The worktree
shares this repository's DVC cache and remotes (``.dvc/config.local`` of the worktree), so
``dvc checkout`` brings the exact bytes from the cache, or ``dvc pull`` from the remote; with
``rebuild``, ``dvc repro --force`` makes them again from that revision's code (its ``src/`` first
on ``PYTHONPATH``) and data. Either way the sha256 must be the one asked for, or it is an error.
Nothing in the main work tree changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kedro_edge.errors import DataError
from kedro_edge.lineage import history
from kedro_edge.lineage.versioning import file_hashes, git


def _dvc(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=3600
    )


def _share_dvc(root: Path, worktree: Path) -> None:
    """Point the worktree's DVC at this repository's cache and (absolute) remote URLs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        cache = repo.config["cache"].get("dir") or os.path.join(repo.dvc_dir, "cache")
        remotes = {name: cfg["url"] for name, cfg in repo.config["remote"].items() if "url" in cfg}
    steps = [("config", "--local", "cache.dir", str(cache))]
    steps += [("remote", "modify", "--local", name, "url", url) for name, url in remotes.items()]
    for args in steps:
        done = _dvc(worktree, *args)
        if done.returncode != 0:
            raise DataError(f"dvc {' '.join(args[:2])} in {worktree}: {done.stderr.strip()[-300:]}")


def restore(root: Path, prefix: str, into: Path | None = None, rebuild: bool = False) -> dict[str, Any]:
    """Check out the revision that made the model ``prefix`` names into ``into`` (a new folder;
    default ``.kedro-edge/restore/<sha12>``) and restore its ``model.onnx``; what was done."""
    known = history.known_models(root)
    sha = history.resolve(prefix, known)
    version = known[sha]
    locked = history.locked_in(root, version.get("md5"))
    if locked is None:
        built = version.get("git_rev") or "an unknown revision"
        dirty = " with uncommitted changes" if version.get("git_dirty") else ""
        raise DataError(
            f"model {sha[:12]}: no commit's dvc.lock pins it (md5 {version.get('md5')}), so it cannot be "
            f"restored; it was built at {built}{dirty}"
        )
    dest = (into or root / ".kedro-edge" / "restore" / sha[:12]).resolve()
    if dest.exists():
        raise DataError(f"{dest}: already exists (remove it, or choose another folder)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if git(root, "worktree", "add", "--detach", str(dest), locked["commit"]) is None:
        raise DataError(f"git worktree add {dest} {locked['commit'][:12]} failed")
    _share_dvc(root, dest)
    if rebuild:
        # conf/base alone, as dvc.lock pinned it: the main tree's conf/local is not copied in
        (dest / "conf" / "local").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(dest / "src"), str(dest)])}
        how, done = "dvc repro --force (that revision's code)", _dvc(dest, "repro", "--force", env=env)
    else:
        how, done = "dvc checkout (the cache)", _dvc(dest, "checkout", history.MODEL)
        if done.returncode != 0 or not (dest / history.MODEL).is_file():
            how, done = "dvc pull (the remote)", _dvc(dest, "pull", history.MODEL)
    model = dest / history.MODEL
    if done.returncode != 0 or not model.is_file():
        raise DataError(f"{how} in {dest} did not restore {history.MODEL}: {done.stderr.strip()[-400:]}")
    got = file_hashes(model)["sha256"]
    if got != sha:
        raise DataError(f"{model}: sha256 {got[:12]} after {how}, not {sha[:12]}: the bytes differ")
    return {"sha256": sha, "commit": locked["commit"], "worktree": str(dest), "model": str(model), "how": how}
