"""Deployment nodes: roll the validated model.onnx out to the fleet in gated waves; report."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from kedro_edge import config, data, evaluate, plots
from kedro_edge.errors import GateError
from kedro_edge.fleet import report
from kedro_edge.fleet.candidate import Candidate, temporary_folder
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.rollout import staged_rollout
from kedro_edge.io.fleet import ModelFile


def release_to_fleet(
    model_file: ModelFile,
    validated: dict[str, Any],
    fleet: Fleet,
    model_input: dict[str, np.ndarray],
    deployment: dict,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Roll model.onnx out in waves (install, measure on device, gate, activate or roll back).

    Returns the release record and the per-device benchmark report.
    """
    cfg = config.parse(config.DeploymentParams, deployment, "deployment")
    version = model_file.version
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not cfg.enabled:
        skipped = {"verdict": "skipped", "candidate": version, "created_utc": now, "waves": [], "devices": []}
        return skipped, report.benchmarks(version, [])
    validated_sha = (validated.get("model") or {}).get("sha256")
    if validated_sha != version["sha256"]:
        raise GateError(
            f"{version['path']} (sha256 {version['sha256'][:12]}) is not the model that passed validation "
            f"({(validated_sha or 'none')[:12]}): run the validation pipeline first"
        )
    devices = fleet.select(cfg.devices, cfg.group)
    parity_inputs = data.Splits(model_input).x("test")[: cfg.parity_samples]
    reference = evaluate.ort_predict(evaluate.session(model_file.data), parity_inputs)
    manifest = {"model": version, "validation": validated.get("figures"), "created_utc": now}
    with temporary_folder() as tmp:
        candidate = Candidate.prepare(model_file.data, manifest, parity_inputs, Path(tmp), cfg.codec)
        outcome = staged_rollout(fleet, candidate, reference, cfg, devices)
    record = report.release_record(outcome, version, now, cfg)
    return record, report.benchmarks(version, outcome["devices"])


def plot_device_latency(benchmarks: dict[str, Any]) -> Figure:
    return plots.device_latency_figure(benchmarks)


def release_markdown(record: dict[str, Any]) -> str:
    return report.markdown(record, plot="device_latency.png")


def enforce_release(record: dict[str, Any], *_written: Any) -> None:
    """Fail the run with one line unless the release went out everywhere (after the reports are saved)."""
    if record["verdict"] not in ("released", "skipped"):
        raise GateError(report.one_line(record))
