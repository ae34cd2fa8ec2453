"""Helpers shared by the loopback-fleet tests: candidates, the fleet registry, what a device holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from kedro_edge.config import DeploymentParams
from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.inventory import Fleet, parse_fleet
from kedro_edge.fleet.rollout import staged_rollout
from kedro_edge.models import ResidualCNN
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session

PARITY = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
# The test models run in ~30 us a query, where a few us of scheduling noise on a shared 2-core
# machine exceed 5%: a 30% tolerance keeps the promotion tests about waves, while a slow
# candidate (several times slower) still trips it. Detection at the default 5%:
# benchmarks/regression_detection.py.
CFG = DeploymentParams(
    waves=[1, "50%", "100%"], max_parallel=4, lock_timeout=5, regression={"tolerance": 0.3}
)


def registry(
    loopback, budgets: dict | None = None, group: dict | None = None, groups: dict | None = None, **overrides
) -> Fleet:
    """The loopback devices.yml with short benchmarks; ``overrides``: ``{device: {key: value}}``;
    ``groups``: more groups beside ``loopback``."""
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    raw["groups"].update(groups or {})
    raw["groups"]["loopback"].update(
        {"min_runs": 200, "min_seconds": 0.6, "budgets": budgets or {}, **(group or {})}
    )
    for entry in raw["devices"]:
        entry.update(overrides.get(entry["name"], {}))
    return parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))


def model(widths=(8, 16), seed: int = 0, noise: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = ResidualCNN(widths=widths).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(noise * torch.randn_like(p))
    return net


def candidate(tmp_path: Path, net: torch.nn.Module, reference_net: torch.nn.Module | None = None):
    """A candidate of ``net``; the host's reference outputs come from ``reference_net`` (default: net)."""
    data = to_onnx(net, (1, 1, 8, 8)).SerializeToString()
    ref = data if reference_net is None else to_onnx(reference_net, (1, 1, 8, 8)).SerializeToString()
    folder = tmp_path / hashlib.sha256(data).hexdigest()[:8]
    folder.mkdir()
    return Candidate.prepare(data, {"test": True}, PARITY, folder), ort_predict(session(ref), PARITY)


def run(
    loopback, cand, reference, names, cfg=CFG, budgets=None, group=None, overrides=None, groups=None, **kw
):
    fleet = registry(loopback, budgets, group, groups, **(overrides or {}))
    return staged_rollout(fleet, cand, reference, cfg, fleet.select(names), **kw).to_json()


def active(loopback, name) -> str | None:
    """The sha256 of the bytes a device's application would load now (None: nothing active)."""
    path = loopback.device(name)["workdir"] / "current" / "model.onnx"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def history(loopback, name) -> list[dict]:
    path = loopback.device(name)["workdir"] / "history"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def decisions(record) -> dict[str, str]:
    return {d["device"]: d["decision"] for d in record["devices"]}


def assert_whole(loopback, names) -> None:
    """What every fault test holds: each device's active version is complete and was released
    there (never refused or rolled back), and no lease or partial upload is left behind."""
    for name in names:
        workdir = loopback.device(name)["workdir"]
        current = active(loopback, name)
        if current is not None:
            assert (workdir / "current").resolve().name == current, f"{name}: bytes differ from their version"
            events = history(loopback, name)
            last = [e for e in events if e["sha"] == current][-1]
            assert last["event"] in ("released", "forced"), f"{name}: active {current[:12]} was {last}"
        assert not (workdir / ".rollout").exists(), f"{name}: a lease was left behind"
        incoming = [p.name for p in (workdir / "versions").glob(".incoming-*")]
        assert not incoming, f"{name}: partial uploads left: {incoming}"
