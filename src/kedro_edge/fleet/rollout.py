"""Staged rollout: waves of devices, each installed -> measured -> gated -> activated.

A wave is, for every device group, the next slice of its devices (``[1, "25%", "100%"]``: one
canary per group, then a quarter, then all). On each device the candidate is installed but
not active, measured against the release active there (interleaved A B / B A blocks), and
checked against its group's budgets and the no-regression gate. Only a wave that passes is
activated. A wave with more failures than ``max_failure_percentage`` aborts the rollout: no
later wave starts and every device this rollout activated is rolled back (to the release
below it in its history; a device that had none is left with nothing active).

The rollout holds a lease (``kedro_edge.fleet.lease``) on each device from ``begin`` until it
is done with it, renewed while the rollout runs and given back on every path. A rollout that
was killed resumes when run again: devices already running the candidate are skipped (and,
having passed their gates in the run that activated them, are not rolled back later).

Verdicts: ``released`` only when every targeted device ends on the candidate; ``partial`` when
some do (the policy let failures through, or some devices were in no wave); ``blocked`` when
none does; ``rolled_back`` when an aborted rollout undid its activations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.fleet import device as ops
from kedro_edge.fleet import device_gates, lease
from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.connections import Connections
from kedro_edge.fleet.inventory import Device, Fleet
from kedro_edge.fleet.params import DeploymentParams
from kedro_edge.fleet.pool import Outcome, for_each
from kedro_edge.fleet.records import (
    ON_CANDIDATE,
    Decision,
    DeviceEntry,
    RolloutOutcome,
    Status,
    Verdict,
    WaveOutcome,
    WaveRecord,
)
from kedro_edge.fleet.ssh import Endpoint
from kedro_edge.runtimes import onnxruntime as ort_host


def plan_waves(devices: list[Device], waves: list[int | str]) -> list[list[Device]]:
    """Per group, cumulative slices: an int is a device count, ``"25%"`` a share (rounded up)."""
    groups: dict[str, list[Device]] = {}
    for d in devices:
        groups.setdefault(d.group, []).append(d)
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


class Rollout:
    """The state of one rollout of one candidate; ``run`` walks the waves."""

    def __init__(
        self, fleet: Fleet, candidate: Candidate, reference: np.ndarray, cfg: DeploymentParams, lease_id: str
    ) -> None:
        self.fleet, self.candidate, self.reference, self.cfg = fleet, candidate, reference, cfg
        self.lease = lease.Lease(lease_id, cfg.lease_ttl, cfg.lock_timeout)
        root, trust = Path(fleet.root), cfg.trust_new_host_keys
        self.connections = Connections(root, trust, cfg.max_open_connections)
        self.by_name = {d.name: d for d in fleet.devices}  # the keeper renews by name
        self.devices: dict[str, DeviceEntry] = {}
        self.activated: list[Device] = []
        self.waves: list[WaveRecord] = []  # what each wave did, for the record
        self.keeper = lease.Keeper(self._renew, cfg.lease_ttl / 3, workers=cfg.max_parallel)

    # -- plumbing ----------------------------------------------------------------------------
    def _renew(self, name: str) -> None:
        with self.connections.use(self.by_name[name]) as endpoint:
            ops.renew(endpoint, self.lease)

    def _step(
        self,
        devices: list[Device],
        work: Callable[[Device, Endpoint], dict],
        parallel: int,
        what: str,
        gives_back_lease: bool = False,
        leased: bool = True,
    ) -> dict[str, Outcome]:
        """``work`` on each device over its connection; with ``gives_back_lease``, a device it
        succeeded on is no longer renewed (the command released the lease on the device). A
        ``leased`` command renewed the lease on the device, so the keeper need not for a while."""

        def on(d: Device) -> dict:
            with self.connections.use(d) as endpoint:
                data = work(d, endpoint)
            if leased:
                self.keeper.touch(d.name)
            return data

        outcomes = {o.device: o for o in for_each(devices, on, parallel, what)}
        if gives_back_lease:
            for name, o in outcomes.items():
                if o.status == Status.OK:
                    self.keeper.drop(name)
        return outcomes

    def _ok(self, devices: list[Device], outcomes: dict[str, Outcome]) -> list[tuple[Device, dict]]:
        """The devices the step succeeded on, with its answer; the others are marked failed."""
        ok = []
        for d in devices:
            o = outcomes[d.name]
            if o.status == Status.FAILED:
                self.devices[d.name].update(
                    decision=Decision.FAILED, error=o.error, reason=o.error, failure=o.kind
                )
            else:
                ok.append((d, o.data))
        return ok

    # -- per device steps ----------------------------------------------------------------------
    @property
    def _measure_when_shipped(self) -> bool:
        """Benchmark in the command that installs (one command fewer per device) unless fewer
        devices may benchmark at once than install at once (hosts shared by several devices)."""
        return self.cfg.max_parallel_benchmarks >= self.cfg.max_parallel

    def _ship(self, d: Device, endpoint: Endpoint) -> dict:
        reserve = int(self.cfg.disk_reserve_mb * 1e6)
        held = functools.partial(self.keeper.hold, d.name)  # from begin on, the lease is ours
        cfg, group = self.cfg.regression, self.fleet.groups[d.group]
        measure = (group, cfg.blocks, cfg.enabled) if self._measure_when_shipped else None
        data = ops.ship(endpoint, self.candidate, self.lease, reserve, on_leased=held, measure=measure)
        if "measurement" in data:
            data["measurement"] = self._with_parity(data["measurement"])
        return data

    def _measure(self, d: Device, endpoint: Endpoint) -> dict:
        entry = self.devices[d.name]
        baseline = entry.before if self.cfg.regression.enabled else None  # nothing would use it
        result = ops.benchmark(
            endpoint, self.candidate.sha256, self.fleet.groups[d.group],
            baseline=baseline, blocks=self.cfg.regression.blocks,
        )  # fmt: skip
        return self._with_parity(result)

    def _with_parity(self, result: dict) -> dict:
        result["parity"] = ort_host.parity(self.reference, result.pop("parity_outputs"))
        return result

    def _refuse(self, d: Device, endpoint: Endpoint) -> dict:
        reason = self.devices[d.name].reason
        return ops.refuse(endpoint, self.candidate.sha256, self.lease, reason)

    def _release(self, d: Device, endpoint: Endpoint) -> dict:
        return ops.release(endpoint, self.lease)

    def _activator(self, last: bool) -> Callable[[Device, Endpoint], dict]:
        sha, keep = self.candidate.sha256, self.cfg.keep_versions
        return lambda d, endpoint: ops.activate(endpoint, sha, self.lease, keep, release=last)

    def _roll_back(self, d: Device, endpoint: Endpoint) -> dict:
        return ops.rollback(endpoint, self.lease, allow_empty=True, release=True)

    # -- one wave ------------------------------------------------------------------------------
    def wave(self, number: int, wave: list[Device], last: bool) -> bool:
        """Install, measure, gate; activate the wave if it passes. False: the rollout must abort."""
        passed = self.prepare(number, wave)
        if self.waves[-1].failure_percentage > self.cfg.max_failure_percentage:
            self.waves[-1].outcome = WaveOutcome.ABORTED
            return False
        self.activate(number, passed, last)
        self.waves[-1].outcome = WaveOutcome.PASSED
        return True

    def prepare(self, number: int, wave: list[Device]) -> list[Device]:
        """Install, measure and gate ``wave`` (nothing activated); record the wave's failures.

        Returns the devices that passed every gate (still leased, the candidate installed)."""
        sha, cfg = self.candidate.sha256, self.cfg
        for d in wave:
            self.devices[d.name] = DeviceEntry(device=d.name, group=d.group, wave=number, decision=None)
        what = "install and measure" if self._measure_when_shipped else "install"
        shipped = self._step(wave, self._ship, cfg.max_parallel, f"wave {number}: {what}")
        measure, already = [], []
        for d, data in self._ok(wave, shipped):
            entry = self.devices[d.name]
            entry.update(workdir=data["workdir"], before=data["current"], install=data["install"])
            if data["current"] == sha:  # done by an earlier (interrupted) run: skipped, and left
                entry.update(decision=Decision.ALREADY_ACTIVE, before=data["previous"])  # as it is on abort
                already.append(d)
            else:
                measure.append(d)
        self._step(already, self._release, cfg.max_parallel, f"wave {number}: release leases", True)
        if self._measure_when_shipped:
            measured = {
                d.name: Outcome(d.name, Status.OK, data=shipped[d.name].data["measurement"]) for d in measure
            }
        else:
            measured = self._step(
                measure, self._measure, cfg.max_parallel_benchmarks, f"wave {number}: benchmark",
                leased=False,
            )  # fmt: skip
        passed, refused = [], []
        for d, data in self._ok(measure, measured):
            entry = self.devices[d.name]
            results = device_gates.evaluate(data, self.fleet.groups[d.group].budgets, cfg.regression)
            bad = [r for r in results if not r.passed]
            entry.update(
                measurement=data, gates=[r.to_dict() for r in results],
                decision=Decision.REFUSED if bad else Decision.PASSED,
                reason="; ".join(r.reason for r in bad) if bad else "all gates passed",
            )  # fmt: skip
            (refused if bad else passed).append(d)
        recorded = self._step(
            refused, self._refuse, cfg.max_parallel, f"wave {number}: record refusals", True
        )
        for d in refused:
            if recorded[d.name].status == Status.FAILED:  # still refused; the lease lapses or is released
                self.devices[d.name].record_error = recorded[d.name].error
        failures = [d.name for d in wave if counts_as_failure(self.devices[d.name], cfg)]
        self.waves.append(
            WaveRecord(
                wave=number,
                devices=[d.name for d in wave],
                failed=failures,
                failure_percentage=100 * len(failures) / len(wave),
            )
        )
        return passed

    def activate(self, number: int, passed: list[Device], last: bool) -> None:
        """Make the candidate current on ``passed``; the last wave gives their leases back too."""
        for d in passed:  # a task of a sharded release activates what another task installed
            self.devices.setdefault(d.name, DeviceEntry(device=d.name, group=d.group, wave=number))
        activate = self._activator(last)
        activations = self._step(passed, activate, self.cfg.max_parallel, f"wave {number}: activate", last)
        for d, _ in self._ok(passed, activations):
            self.devices[d.name].decision = Decision.ACTIVATED
            self.activated.append(d)

    def abort(self, wave: list[Device]) -> None:
        """Nothing of the aborted wave is activated; every device earlier waves of this run
        activated goes back. Devices a previous run already moved to the candidate stay."""
        for d in wave:
            if self.devices[d.name].decision == Decision.PASSED:
                self.devices[d.name].update(decision=Decision.NOT_ACTIVATED, reason="its wave was aborted")
        self.roll_back(self.activated)

    def roll_back(self, devices: list[Device]) -> None:
        """Back to what each of ``devices`` ran before this rollout; their leases given back."""
        back = self._step(devices, self._roll_back, self.cfg.max_parallel, "roll back", True)
        for d in devices:
            entry = self.devices.setdefault(d.name, DeviceEntry(device=d.name, group=d.group))
            if back[d.name].status == Status.OK:
                entry.update(decision=Decision.ROLLED_BACK, active_after=back[d.name].data["current"])
            else:
                entry.update(decision=Decision.ROLLBACK_FAILED, error=back[d.name].error)

    def give_back_leases(self, devices: list[Device]) -> None:
        """Every lease of ``devices`` still held (failed, not activated, activated in an earlier
        wave): released."""
        leased = self.keeper.held  # a copy: taken once
        held = [d for d in devices if d.name in leased]
        outcomes = self._step(held, self._release, self.cfg.max_parallel, "release leases", True)
        for name, o in outcomes.items():
            if o.status == Status.FAILED:
                self.devices.setdefault(name, DeviceEntry(device=name)).lease_error = o.error  # it lapses

    @contextmanager
    def running(self) -> Iterator[Rollout]:
        """Leases renewed while the body runs; every connection closed after it."""
        try:
            with self.keeper:
                yield self
        finally:
            self.connections.close()

    def entries(self, devices: list[Device]) -> list[DeviceEntry]:
        """Each device's record entry, with what reaching it cost (connections, commands, bytes)."""
        out = []
        for d in devices:
            entry = self.devices.get(d.name)
            if entry is None:
                entry = DeviceEntry(device=d.name, group=d.group, decision=Decision.NOT_REACHED)
            endpoint = self.connections.endpoints.get(d.name)
            if endpoint is not None:
                c = endpoint.counters
                entry.update(
                    ssh_connections=c.connections, remote_commands=c.commands, bytes_sent=c.bytes_sent
                )
            out.append(entry)
        return out

    def controller(self) -> dict[str, int]:
        return {"connections_peak": self.connections.peak, "lease_renewals": self.keeper.renewals}

    def run(self, devices: list[Device], on_wave: Callable[[int], None] | None = None) -> RolloutOutcome:
        plan = plan_waves(devices, self.cfg.waves)
        aborted = False
        with self.running():
            try:
                for number, wave in enumerate(plan, start=1):
                    if not self.wave(number, wave, last=number == len(plan)):
                        self.abort(wave)
                        aborted = True
                        break
                    if on_wave is not None:
                        on_wave(number)
            finally:
                self.give_back_leases(devices)
        waved = {d.name for w in plan for d in w}
        for d in devices:
            if d.name not in waved:
                left_out = DeviceEntry(device=d.name, group=d.group, decision=Decision.NOT_IN_ANY_WAVE)
                self.devices[d.name] = left_out
        entries = self.entries(devices)
        return RolloutOutcome(
            verdict=verdict(entries, aborted, bool(self.activated)), rollout_id=self.lease.id,
            shipping=shipping(self.candidate), waves=self.waves, controller=self.controller(),
            devices=entries,
        )  # fmt: skip


def shipping(c: Candidate) -> dict[str, Any]:
    """What each device that received the candidate was sent (one that had it: 0)."""
    return {"model_bytes": c.size_bytes, "model_shipped_bytes": c.model_shipped_bytes,
            "shipped_bytes": c.shipped_bytes, "wire": list(c.wire)}  # fmt: skip


def counts_as_failure(entry: DeviceEntry, cfg: DeploymentParams) -> bool:
    """A device's outcome counts against its wave's ``max_failure_percentage``."""
    if entry.decision == Decision.REFUSED:
        return True
    if entry.decision != Decision.FAILED:
        return False
    return cfg.unreachable_is_failure or entry.failure != "unreachable"


def verdict(entries: list[DeviceEntry], aborted: bool, undid_activations: bool) -> Verdict:
    """``released`` only if every targeted device ended on the candidate."""
    if aborted:
        return Verdict.ROLLED_BACK if undid_activations else Verdict.BLOCKED
    on = sum(e.decision in ON_CANDIDATE for e in entries)
    return Verdict.RELEASED if on == len(entries) else Verdict.PARTIAL if on else Verdict.BLOCKED


def staged_rollout(
    fleet: Fleet,
    candidate: Candidate,
    reference: np.ndarray,
    cfg: DeploymentParams,
    devices: list[Device] | None = None,
    on_wave: Callable[[int], None] | None = None,
) -> RolloutOutcome:
    """Roll ``candidate`` out in waves; returns the verdict, each wave and each device's decision.

    ``on_wave(n)`` is called after wave ``n`` is activated (progress reporting; tests use it to
    interrupt a rollout at a known point).
    """
    with lease.rollout_id(Path(fleet.root), candidate.sha256) as (rollout_id, resumed):
        record = Rollout(fleet, candidate, reference, cfg, rollout_id).run(
            fleet.devices if devices is None else devices, on_wave
        )
        record.resumed = resumed
        return record
