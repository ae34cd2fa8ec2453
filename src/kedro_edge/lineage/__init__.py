"""Where a model came from, and what could make a reproduction stale.

    deps.py     the code each DVC stage runs, from its ``kedro run`` command, checked against dvc.yaml
    history.py  git and DVC: the commit whose dvc.lock pins a model, its params, metrics, search, releases
    fleet.py    the devices: which hold a model, run it, would roll back to it; their history of it
    restore.py  a model's revision checked out into its own git worktree, its sha256 verified

``lineage`` puts the first three together for ``kedro edge lineage <sha256-prefix>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro_edge.fleet.inventory import Device, Fleet


def lineage(
    root: Path, prefix: str, fleet: Fleet | None = None, devices: list[Device] | None = None
) -> dict[str, Any]:
    """Everything the repository and the fleet know about the model whose sha256 starts with ``prefix``."""
    from kedro_edge.lineage import fleet as on_fleet
    from kedro_edge.lineage import history

    known = history.known_models(root)
    states = on_fleet.held(fleet, devices) if fleet is not None else []
    on_devices = {v for s in states for v in s.get("versions", [])} | {
        e.get("sha") for s in states for e in s.get("history", []) if e.get("sha")
    }
    sha = history.resolve(prefix, set(known) | on_devices)
    version = known.get(sha)
    locked = history.locked_in(root, version.get("md5")) if version else None
    return {
        "sha256": sha,
        "version": version,  # git revision at build, dirty flag, DVC md5, conf/local overrides
        "locked_in": locked,
        "revision": history.at_revision(root, locked["commit"], sha) if locked else None,
        "releases": history.releases(root, sha),
        "fleet": on_fleet.of_model(states, sha) if fleet is not None else None,
    }
