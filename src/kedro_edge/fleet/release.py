"""Staged rollout: waves of devices, each installed -> measured -> gated -> activated.

A wave is, for every device group, the next slice of its devices (``[1, "25%", "100%"]``: one
canary per group, then a quarter, then all). On each device the candidate is installed but
not active, measured against the release active there (interleaved A B blocks), and
checked against its group's budgets and the no-regression gate. Only a wave that passes is
activated. A wave with more failures than ``max_failure_percentage`` aborts the rollout: no
later wave starts and every device this rollout activated goes back to its previous release
(a device that had none is left with nothing active).

The rollout holds a lease on each device it touches (id: the candidate's sha256), so two
rollouts cannot interleave on a device, and a rollout that was killed resumes when run again:
devices already running the candidate are skipped (and, having passed their gates in the run
that activated them, are not rolled back if a later wave of the resumed run fails).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.config import DeploymentParams
from kedro_edge.fleet import gates, rollout
from kedro_edge.fleet.deploy import parity
from kedro_edge.fleet.inventory import Device, Fleet
from kedro_edge.fleet.ssh import Endpoint, connect

UNREACHABLE = ("cannot connect", "connect timed out", "host key", "authentication failed")


def plan_waves(devices: list[Device], waves: list[int | str]) -> list[list[Device]]:
    """Per group, cumulative slices: an int is a device count, ``"25%"`` a share (rounded up)."""
    groups: dict[str, list[Device]] = {}
    for device in devices:
        groups.setdefault(device.group, []).append(device)
    done = dict.fromkeys(groups, 0)
    plan = []
    for size in waves:
        wave = []
        for group, members in groups.items():
            if isinstance(size, str):
                upto = math.ceil(len(members) * float(size.rstrip("%")) / 100)
            else:
                upto = size
            upto = min(len(members), max(upto, done[group]))
            wave += members[done[group] : upto]
            done[group] = upto
        if wave:
            plan.append(wave)
    return plan


class _Rollout:
    """The state of one rollout; ``run`` walks the waves."""

    def __init__(self, fleet: Fleet, release: rollout.Release, reference: np.ndarray, cfg: DeploymentParams):
        self.fleet, self.release, self.reference, self.cfg = fleet, release, reference, cfg
        self.lease = release.sha256
        self.endpoints: dict[str, Endpoint] = {}
        self.devices: dict[str, dict[str, Any]] = {}  # name -> record entry
        self.activated: list[Device] = []
        self.waves: list[dict[str, Any]] = []  # what each wave did, for the record

    def _endpoint(self, device: Device) -> Endpoint:
        if device.name not in self.endpoints:
            self.endpoints[device.name] = connect(device, Path(self.fleet.root), self.cfg.trust_new_host_keys)
        return self.endpoints[device.name]

    def _each(self, devices: list[Device], work: Callable[[Device], dict], parallel: int, what: str) -> dict:
        if not devices:
            return {}
        return {o.device: o for o in rollout.for_each(devices, work, parallel, what)}

    def _fail(self, name: str, error: str) -> None:
        entry = self.devices[name]
        unreachable = any(u in error for u in UNREACHABLE)
        entry.update(decision="failed", error=error, reason=error, unreachable=unreachable)

    # -- one wave ------------------------------------------------------------------------------
    def _install(self, device: Device) -> dict:
        return rollout.install(
            self._endpoint(device),
            self.release,
            activate=False,
            lock_timeout=self.cfg.lock_timeout,
            lease=self.lease,
        )

    def _measure(self, device: Device) -> dict:
        entry = self.devices[device.name]
        current = entry["before"]
        result = rollout.benchmark(
            self._endpoint(device), self.release.sha256, entry["workdir"], self.fleet.groups[device.group],
            baseline=current, blocks=self.cfg.regression.blocks,
        )  # fmt: skip
        result.pop("ok")
        result["parity"] = parity(self.reference, result.pop("parity_outputs"))
        return result

    def _switch(self, command: str, *args: str) -> Callable[[Device], dict]:
        def work(device: Device) -> dict:
            workdir = self.devices[device.name]["workdir"]
            return rollout.switch(
                self._endpoint(device),
                workdir,
                command,
                *args,
                lease=self.lease,
                lock_timeout=self.cfg.lock_timeout,
            )

        return work

    def wave(self, number: int, wave: list[Device]) -> bool:
        """Install, measure, gate; activate the wave if it passes. False: the rollout must abort."""
        sha, cfg = self.release.sha256, self.cfg
        for d in wave:
            self.devices[d.name] = {"device": d.name, "group": d.group, "wave": number, "decision": None}
        installed = self._each(wave, self._install, cfg.max_parallel, f"wave {number}: install")
        measure = []
        for d in wave:
            o, entry = installed[d.name], self.devices[d.name]
            if o.status == "failed":
                self._fail(d.name, o.error)
                continue
            entry.update(workdir=o.data["workdir"], before=o.data["current"], install=o.data["install"])
            if o.data["current"] == sha:  # done by an earlier (interrupted) run: skipped, and left
                entry.update(decision="already active", before=o.data["previous"])  # as it is on abort
            else:
                measure.append(d)
        measured = self._each(
            measure, self._measure, cfg.max_parallel_benchmarks, f"wave {number}: benchmark"
        )
        passed = []
        for d in measure:
            o, entry = measured[d.name], self.devices[d.name]
            if o.status == "failed":
                self._fail(d.name, o.error)
                continue
            results = gates.evaluate(o.data, self.fleet.groups[d.group].budgets, cfg.regression)
            entry["measurement"] = o.data
            entry["gates"] = [r.to_dict() for r in results]
            refused = [r for r in results if not r.passed]
            entry["decision"] = "refused" if refused else "passed"
            entry["reason"] = "; ".join(r.reason for r in refused) if refused else "all gates passed"
            if not refused:
                passed.append(d)
        failures = [
            n for n in (d.name for d in wave)
            if self.devices[n]["decision"] in ("failed", "refused")
            and (cfg.unreachable_is_failure or not self.devices[n].get("unreachable"))
        ]  # fmt: skip
        share = 100 * len(failures) / len(wave)
        self.waves.append(
            {
                "wave": number,
                "devices": [d.name for d in wave],
                "failed": failures,
                "failure_percentage": share,
            }
        )
        if share > cfg.max_failure_percentage:
            self.waves[-1]["outcome"] = "aborted"
            return False
        activations = self._each(
            passed, self._switch("activate", sha), cfg.max_parallel, f"wave {number}: activate"
        )
        for d in passed:
            if activations[d.name].status == "ok":
                self.devices[d.name]["decision"] = "activated"
                self.activated.append(d)
            else:
                self._fail(d.name, activations[d.name].error)
        done = ("refused", "failed", "already active")
        self._release_leases([d for d in wave if self.devices[d.name]["decision"] in done])
        self.waves[-1]["outcome"] = "passed"
        return True

    def _release_leases(self, devices: list[Device]) -> None:
        reachable = [d for d in devices if "workdir" in self.devices[d.name]]
        self._each(reachable, self._switch("release"), self.cfg.max_parallel, "release leases")

    def abort(self, wave: list[Device]) -> None:
        """Nothing of the aborted wave was activated; put back everything earlier waves of this run
        activated. Devices a previous run already moved to the candidate were gated then, and stay."""
        for d in wave:
            if self.devices[d.name]["decision"] == "passed":
                self.devices[d.name].update(decision="not activated", reason="its wave was aborted")
        self._release_leases([d for d in wave if self.devices[d.name]["decision"] != "already active"])
        back = self._each(self.activated, self._switch("rollback"), self.cfg.max_parallel, "roll back")
        for d in self.activated:
            entry = self.devices[d.name]
            if back[d.name].status == "ok":
                entry["decision"] = "rolled back"
                entry["active_after"] = back[d.name].data["current"]
            else:
                entry.update(decision="rollback failed", error=back[d.name].error)

    def run(self, devices: list[Device], on_wave: Callable[[int], None] | None = None) -> dict[str, Any]:
        plan = plan_waves(devices, self.cfg.waves)
        verdict = None
        try:
            for number, wave in enumerate(plan, start=1):
                if not self.wave(number, wave):
                    had_activated = bool(self.activated)
                    self.abort(wave)
                    verdict = "rolled_back" if had_activated else "blocked"
                    break
                if on_wave is not None:
                    on_wave(number)
            else:
                good = ("activated", "already active")
                verdict = (
                    "released" if all(e["decision"] in good for e in self.devices.values()) else "partial"
                )
        finally:
            for endpoint in self.endpoints.values():
                endpoint.close()
        waved = {d.name for w in plan for d in w}
        for d in devices:
            if d.name not in waved:
                self.devices[d.name] = {"device": d.name, "group": d.group, "decision": "not in any wave"}
            elif d.name not in self.devices:
                self.devices[d.name] = {"device": d.name, "group": d.group, "decision": "not reached"}
        for name, entry in self.devices.items():
            endpoint = self.endpoints.get(name)
            if endpoint is not None:
                c = endpoint.counters
                entry.update(
                    ssh_connections=c.connections, remote_commands=c.commands, bytes_sent=c.bytes_sent
                )
        return {"verdict": verdict, "waves": self.waves, "devices": [self.devices[d.name] for d in devices]}


def staged_rollout(
    fleet: Fleet,
    release: rollout.Release,
    reference: np.ndarray,
    cfg: DeploymentParams,
    devices: list[Device] | None = None,
    on_wave: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Roll ``release`` out in waves; returns the verdict, each wave and each device's decision.

    ``on_wave(n)`` is called after wave ``n`` is activated (progress reporting; tests use it to
    interrupt a rollout at a known point).
    """
    return _Rollout(fleet, release, reference, cfg).run(
        fleet.devices if devices is None else devices, on_wave
    )
