"""A deployment: install a release on every selected device, then benchmark it there.

Installs and benchmarks have separate concurrency: installs are mostly waiting on the
network, benchmarks must not measure each other when devices share a machine (the loopback
test fleet sets 1). Every device gets an entry in the report, ``ok`` or ``failed`` with the
reason; the caller decides what a failure means for the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.fleet import rollout
from kedro_edge.fleet.inventory import Device, Fleet
from kedro_edge.fleet.ssh import Endpoint, SSHEndpoint, connect


def parity(reference: np.ndarray, device_outputs: list) -> dict[str, float]:
    """Top-1 agreement and max absolute difference of the device's outputs vs the host's."""
    got = np.asarray(device_outputs, dtype=np.float32)
    if got.shape != reference.shape:
        return {"top1_agreement": 0.0, "max_abs_diff": float("inf"), "shape": list(got.shape)}
    return {
        "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(got - reference).max()),
    }


def deploy(
    fleet: Fleet,
    release: rollout.Release,
    reference_outputs: np.ndarray,
    devices: list[Device] | None = None,
    max_parallel: int = 16,
    max_parallel_benchmarks: int = 1,
    benchmark: bool = True,
    trust_new_host_keys: bool = False,
) -> list[dict[str, Any]]:
    """Install (and activate) ``release`` on ``devices``, then benchmark it on each; one dict each."""
    devices = fleet.devices if devices is None else devices
    endpoints: dict[str, Endpoint] = {}
    root = Path(fleet.root)

    def install(device: Device) -> dict[str, Any]:
        endpoints[device.name] = endpoint = connect(device, root, trust_new_host_keys)
        return rollout.install(endpoint, release)

    def measure(device: Device) -> dict[str, Any]:
        endpoint, state = endpoints[device.name], installed[device.name]
        result = rollout.benchmark(
            endpoint, release.sha256, state.data["workdir"], fleet.groups[device.group]
        )
        result["parity"] = parity(reference_outputs, result.pop("parity_outputs"))
        result.pop("ok")
        return result

    try:
        installed = {o.device: o for o in rollout.for_each(devices, install, max_parallel, "install")}
        ready = [d for d in devices if installed[d.name].status == "ok"]
        measured = (
            {o.device: o for o in rollout.for_each(ready, measure, max_parallel_benchmarks, "benchmark")}
            if benchmark
            else {}
        )
    finally:
        for endpoint in endpoints.values():
            endpoint.close()

    report = []
    for device in devices:
        entry: dict[str, Any] = {
            "device": device.name,
            "group": device.group,
            "labels": device.labels,
            "model_sha256": release.sha256,
        }
        for stage in (installed[device.name], measured.get(device.name)):
            if stage is None:
                continue
            entry.update(stage.data)
            if stage.status == "failed":
                entry["error"] = stage.error
        entry["status"] = "failed" if "error" in entry else "ok"
        entry.setdefault("error", None)
        endpoint = endpoints.get(device.name)
        if endpoint is not None:
            c = endpoint.counters
            entry.update(ssh_connections=c.connections, remote_commands=c.commands, bytes_sent=c.bytes_sent)
        report.append(entry)
    return report


def survey(
    fleet: Fleet,
    devices: list[Device] | None = None,
    max_parallel: int = 16,
    trust_new_host_keys: bool = False,
) -> list[rollout.Outcome]:
    """Reach every device and ask what it is; an unreachable device's outcome says why."""
    root = Path(fleet.root)

    def ask(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root, trust_new_host_keys)
        try:
            return rollout.facts(endpoint)
        finally:
            endpoint.close()

    return rollout.for_each(fleet.devices if devices is None else devices, ask, max_parallel, "survey")


def trust_host_keys(
    fleet: Fleet, devices: list[Device] | None = None, max_parallel: int = 16
) -> list[rollout.Outcome]:
    """Accept each device's host key if its known_hosts lacks it, and record it there (explicit opt-in).

    Runs nothing on the devices. A changed or ``@revoked`` key is still refused, and so is a device
    with no known_hosts file to record into. Each outcome's data is ``SSHEndpoint.host_key``'s.
    """
    root = Path(fleet.root)

    def accept(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root, trust_new_key=True)
        try:
            if not isinstance(endpoint, SSHEndpoint):
                return {"fingerprint": None, "recorded": False, "known_hosts": None, "pinned": False}
            return endpoint.host_key()
        finally:
            endpoint.close()

    return rollout.for_each(fleet.devices if devices is None else devices, accept, max_parallel, "trust")


def rollback_devices(
    fleet: Fleet, devices: list[Device] | None = None, to: str | None = None, max_parallel: int = 16
) -> list[rollout.Outcome]:
    """Switch each device back to its previous release (or to version ``to``, if it holds it)."""
    root = Path(fleet.root)

    def back(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root)
        try:
            workdir = rollout.ensure_agent(endpoint)["workdir"]
            return rollout.switch(endpoint, workdir, "rollback", *(["--to", to] if to else []))
        finally:
            endpoint.close()

    return rollout.for_each(fleet.devices if devices is None else devices, back, max_parallel, "rollback")
