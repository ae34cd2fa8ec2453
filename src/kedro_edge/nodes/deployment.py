"""Deployment nodes: ship the validated model.onnx to the fleet, measure it there, report."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from kedro_edge import config, data, evaluate, plots
from kedro_edge.errors import GateError, KedroEdgeError
from kedro_edge.fleet import rollout
from kedro_edge.fleet.deploy import deploy
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.io.fleet import ModelFile


def deploy_to_fleet(
    model_file: ModelFile,
    validated: dict[str, Any],
    fleet: Fleet,
    model_input: dict[str, np.ndarray],
    deployment: dict,
) -> dict[str, Any]:
    """Install model.onnx on every selected device, benchmark it there, check parity with the host."""
    cfg = config.parse(config.DeploymentParams, deployment, "deployment")
    version = model_file.version
    if not cfg.enabled:
        return {
            "model": version,
            "skipped": True,
            "devices": [],
            "summary": {"devices": 0, "ok": 0, "failed": 0},
        }
    validated_sha = (validated.get("model") or {}).get("sha256")
    if validated_sha != version["sha256"]:
        raise GateError(
            f"{version['path']} (sha256 {version['sha256'][:12]}) is not the model that passed validation "
            f"({(validated_sha or 'none')[:12]}): run the validation pipeline first"
        )
    devices = fleet.select(cfg.devices, cfg.group)
    parity_inputs = data.Splits(model_input).x("test")[: cfg.parity_samples]
    reference = evaluate.ort_predict(evaluate.session(model_file.data), parity_inputs)
    manifest = {
        "model": version,
        "validation": validated.get("figures"),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with rollout.temporary_folder() as tmp:
        release = rollout.Release.prepare(model_file.data, manifest, parity_inputs, Path(tmp))
        report = deploy(
            fleet,
            release,
            reference,
            devices,
            max_parallel=cfg.max_parallel,
            max_parallel_benchmarks=cfg.max_parallel_benchmarks,
            trust_new_host_keys=cfg.trust_new_host_keys,
        )
    failed = sum(entry["status"] == "failed" for entry in report)
    summary = {"devices": len(report), "ok": len(report) - failed, "failed": failed}
    return {"model": version, "devices": report, "summary": summary}


def plot_device_latency(report: dict[str, Any]) -> Figure:
    return plots.device_latency_figure(report)


class FleetError(KedroEdgeError):
    """One or more devices failed the deployment; the report was written first."""


def enforce_fleet(report: dict[str, Any], *_written: Any) -> None:
    """Fail the run with one line naming the failed devices (after the report is saved)."""
    failed = [d for d in report["devices"] if d["status"] == "failed"]
    if failed:
        first = "; ".join(d["error"] for d in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise FleetError(f"deployment failed on {len(failed)} of {len(report['devices'])} devices: {first}")
