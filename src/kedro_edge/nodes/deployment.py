"""Deployment nodes: roll the validated model.onnx out to the fleet in gated waves; report."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from kedro_edge import config, data
from kedro_edge.errors import GateError
from kedro_edge.evaluation import plots
from kedro_edge.fleet import report, shard
from kedro_edge.fleet.candidate import temporary_folder
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.records import ReleaseRecord, RolloutOutcome, Verdict
from kedro_edge.fleet.rollout import staged_rollout
from kedro_edge.fleet.spec import ReleaseSpec
from kedro_edge.io.fleet import ModelFile
from kedro_edge.runtimes import input_contract
from kedro_edge.runtimes import onnxruntime as ort_host


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
    if not cfg.enabled:
        return skipped(model_file.version)
    spec = release_spec(model_file, validated, fleet, model_input, cfg)
    with temporary_folder() as tmp:
        candidate = spec.candidate(Path(tmp))
        outcome = staged_rollout(fleet, candidate, spec.reference, cfg, fleet.select(spec.devices))
    return release_reports(outcome, spec, cfg)


def release_spec(
    model_file: ModelFile,
    validated: dict[str, Any],
    fleet: Fleet,
    model_input: dict[str, np.ndarray],
    cfg: config.DeploymentParams,
) -> ReleaseSpec:
    """What a release ships, to whom and what the device's outputs must match (a sharded
    release hands it to every task)."""
    version = model_file.version
    validated_sha = (validated.get("model") or {}).get("sha256")
    if validated_sha != version["sha256"]:
        raise GateError(
            f"{version['path']} (sha256 {version['sha256'][:12]}) is not the model that passed validation "
            f"({(validated_sha or 'none')[:12]}): run the validation pipeline first"
        )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = ort_host.session(model_file.data)
    contract = input_contract.contract_of(host)
    if contract is not None:  # what the device app feeds: in the manifest and release.json
        version = {**version, "preprocessing": contract.model_dump(mode="json")}
    # a baked model's devices get the raw pixels the prepared test inputs came from
    parity_inputs = input_contract.feed(host, data.Splits(model_input).x("test")[: cfg.parity_samples])
    return ReleaseSpec(
        model=model_file.data, version=version, created_utc=now, codec=cfg.codec,
        manifest={"model": version, "validation": validated.get("figures"), "created_utc": now},
        parity=parity_inputs,
        reference=ort_host.ort_predict(host, parity_inputs),
        devices=[d.name for d in fleet.select(cfg.devices, cfg.group)],
    )  # fmt: skip


def sharded_release_plan(
    model_file: ModelFile,
    validated: dict[str, Any],
    fleet: Fleet,
    model_input: dict[str, np.ndarray],
    deployment: dict,
    rollout_id: str,
) -> shard.ShardPlan | None:
    """Everything the tasks of a sharded release share: the release spec, the fleet, the parsed
    parameters, the rollout id and each wave's batches; None when deployment is off."""
    cfg = config.parse(config.DeploymentParams, deployment, "deployment")
    if not cfg.enabled:
        return None
    spec = release_spec(model_file, validated, fleet, model_input, cfg)
    batches = shard.plan(fleet, spec.devices, cfg.waves, cfg.shard_size)
    return shard.ShardPlan(spec, fleet, cfg, rollout_id, batches)


def sharded_release_reports(
    plan: shard.ShardPlan, state: shard.ShardState, closed: list[shard.BatchResult]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """release.json and the benchmark report of a sharded release: its tasks' results merged."""
    with plan.release() as release:
        outcome = shard.merge(release, plan.spec.devices, state.waves, state.results + closed)
    return release_reports(outcome, plan.spec, plan.cfg)


def skipped(version: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = ReleaseRecord(verdict=Verdict.SKIPPED, candidate=version, created_utc=now, waves=[], devices=[])
    return record.to_json(), report.benchmarks(version, []).to_json()


def release_reports(
    outcome: RolloutOutcome, spec: ReleaseSpec, cfg: config.DeploymentParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """release.json and the per-device benchmark report of a rollout's outcome."""
    record = report.release_record(outcome, spec.version, spec.created_utc, cfg)
    return record.to_json(), report.benchmarks(spec.version, outcome.devices).to_json()


def plot_device_latency(benchmarks: dict[str, Any]) -> Figure:
    return plots.device_latency_figure(benchmarks)


def release_markdown(record: dict[str, Any]) -> str:
    return report.markdown(record, plot="device_latency.png")


def enforce_release(record: dict[str, Any], *_written: Any) -> None:
    """Fail the run with one line unless the release went out everywhere (after the reports are saved)."""
    if record["verdict"] not in (Verdict.RELEASED, Verdict.SKIPPED):
        raise GateError(report.one_line(record))
