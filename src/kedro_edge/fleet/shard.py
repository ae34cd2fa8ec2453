"""One release over several controllers: its waves split into batches, each batch a task.

A fleet of tens of thousands outgrows one controller. Here a release keeps its waves and its
gates, but every wave is cut into batches of at most ``batch_size`` devices (per wave, in the
wave's order), and each phase of a wave is one task per batch, run by an orchestrator on as
many workers as it has:

1. ``prepare_batch``: install, measure and gate the batch (nothing activated; the devices that
   passed keep their lease, the others give it back);
2. ``decide_wave``: the wave's failures over all its batches against ``max_failure_percentage``
   (one small task; the only point where batches meet);
3. ``activate_batch`` on every batch of a passing wave; or, when a wave fails, ``roll_back_batch``
   on the devices earlier waves activated and ``release_batch`` on the aborted wave's devices;
4. ``release_batch`` at the end, on the devices earlier waves left leased;
5. ``merge``: one release record, as a single controller writes it.

Every task takes plain data (device names, the rollout id, the ``ShardPlan``, record entries)
and rebuilds what it needs from the release's inputs, so it can run in another process or on
another machine. All tasks hold the devices under ONE rollout id (``Release.rollout_id``): a
device's lease names the release, not the task, so the task that activates a device finds the
lease the task that installed it took. Between two tasks nothing renews a lease: a wave's
activation must start within ``lease_ttl`` of its installation (a lapsed lease that nobody
took is simply taken again; one another rollout took makes that device fail, as it should).

Between tasks a release carries a small ``ShardState``: ``start``, then per wave
``wave_batches`` -> ``prepare_batch`` per batch -> ``after_prepare`` (the decision and the
batches to activate) -> ``activate_batch`` per batch -> ``after_activate``; then ``closing``
-> ``close_batch`` per task -> ``merge``. ``sharded_rollout`` runs exactly that in this
process, one task after another; ``pipelines/sharded_release.py`` runs it as a Dagster job,
each task a step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.fleet.candidate import Candidate, temporary_folder
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.params import DeploymentParams
from kedro_edge.fleet.records import (
    UNDONE,
    Decision,
    DeviceEntry,
    Record,
    RolloutOutcome,
    WaveOutcome,
    WaveRecord,
)
from kedro_edge.fleet.rollout import Rollout, plan_waves, shipping, verdict
from kedro_edge.fleet.spec import ReleaseSpec

MAX_BATCH = 1000  # devices one controller task takes on (benchmarks/fleet_scale.py)

Batches = list[list[list[str]]]  # wave -> batch -> device names


@dataclass
class Release:
    """What every task of one release needs: the fleet, the candidate, the host's reference
    outputs, the deployment parameters and the one rollout id the devices are leased under."""

    fleet: Fleet
    candidate: Candidate
    reference: np.ndarray
    cfg: DeploymentParams
    rollout_id: str

    def rollout(self) -> Rollout:
        return Rollout(self.fleet, self.candidate, self.reference, self.cfg, self.rollout_id)


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """What the tasks of a sharded release share: the release spec, the fleet, the parsed
    parameters, the rollout id and each wave's batches (``plan``)."""

    spec: ReleaseSpec
    fleet: Fleet
    cfg: DeploymentParams
    rollout_id: str
    batches: Batches

    @contextmanager
    def release(self) -> Iterator[Release]:
        """One task's view of the release: the candidate's files made again in a temporary
        folder, the same bytes in every task."""
        with temporary_folder() as tmp:
            candidate = self.spec.candidate(Path(tmp))
            yield Release(self.fleet, candidate, self.spec.reference, self.cfg, self.rollout_id)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "fleet": self.fleet.model_dump(), "cfg": self.cfg.model_dump(),
                "rollout_id": self.rollout_id, "batches": self.batches}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardPlan:
        fleet, cfg = Fleet.model_validate(data["fleet"]), DeploymentParams.model_validate(data["cfg"])
        return cls(ReleaseSpec.from_json(data["spec"]), fleet, cfg, data["rollout_id"], data["batches"])


class BatchResult(Record):
    """What one task did: its devices' entries, and for a prepared batch its wave and failures."""

    wave: int | None = None
    entries: list[DeviceEntry]
    failed: list[str] | None = None
    controller: dict[str, int] | None = None


class ShardState(Record):
    """What a sharded release carries from task to task."""

    waves: list[WaveRecord]
    results: list[BatchResult]
    activated: list[str]  # devices this release activated, in order
    aborted: bool
    waiting: list[str] | None = None  # an aborted wave's devices that passed: their leases to give back


def plan(fleet: Fleet, names: list[str], waves: list[int | str], batch_size: int = MAX_BATCH) -> Batches:
    """The release's waves (as a single controller plans them), each cut into batches."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size {batch_size} must be between 1 and {MAX_BATCH}")
    return [
        [[d.name for d in wave[i : i + batch_size]] for i in range(0, len(wave), batch_size)]
        for wave in plan_waves(fleet.select(names), waves)
    ]


def prepare_batch(release: Release, number: int, names: list[str]) -> BatchResult:
    """Install, measure and gate one batch of wave ``number``: its entries and failures."""
    devices = release.fleet.select(names)
    rollout = release.rollout()
    with rollout.running():
        passed = rollout.prepare(number, devices)
        rollout.give_back_leases([d for d in devices if d not in passed])
    return BatchResult(wave=number, entries=rollout.entries(devices), failed=rollout.waves[-1].failed,
                       controller=rollout.controller())  # fmt: skip


def decide_wave(number: int, batches: list[BatchResult], cfg: DeploymentParams) -> WaveRecord:
    """The wave's record over all its batches: ``outcome`` ``passed`` or ``aborted``."""
    names = [e.device for b in batches for e in b.entries]
    failed = [name for b in batches for name in b.failed or []]
    share = 100 * len(failed) / len(names)
    outcome = WaveOutcome.ABORTED if share > cfg.max_failure_percentage else WaveOutcome.PASSED
    return WaveRecord(wave=number, devices=names, failed=failed, failure_percentage=share,
                      outcome=outcome, batches=len(batches))  # fmt: skip


def passed_in(batch: BatchResult) -> list[str]:
    return [e.device for e in batch.entries if e.decision == Decision.PASSED]


def activate_batch(release: Release, number: int, names: list[str], last: bool) -> BatchResult:
    """Activate the devices of one batch that passed; the last wave gives their leases back."""
    rollout = release.rollout()
    with rollout.running():
        rollout.activate(number, release.fleet.select(names), last)
    return BatchResult(entries=rollout.entries(release.fleet.select(names)), controller=rollout.controller())


def roll_back_batch(release: Release, names: list[str]) -> BatchResult:
    """An aborted release: these devices (activated by earlier waves) go back; leases given back."""
    rollout = release.rollout()
    with rollout.running():
        rollout.roll_back(release.fleet.select(names))
    return BatchResult(entries=rollout.entries(release.fleet.select(names)), controller=rollout.controller())


def release_batch(release: Release, names: list[str]) -> BatchResult:
    """Give back the leases these devices still hold under the release's rollout id."""
    devices = release.fleet.select(names)
    rollout = release.rollout()
    with rollout.running():
        for d in devices:
            rollout.keeper.hold(d.name)  # held by an earlier task, under the same id
        rollout.give_back_leases(devices)
    return BatchResult(entries=rollout.entries(devices), controller=rollout.controller())


def merge(
    release: Release, names: list[str], waves: list[WaveRecord], results: list[BatchResult]
) -> RolloutOutcome:
    """One release record from every task's results, in task order (later phases update earlier)."""
    entries: dict[str, DeviceEntry] = {}
    for result in results:
        for e in result.entries:
            entries.setdefault(e.device, DeviceEntry(device=e.device)).absorb(e)
    planned = {name for w in waves for name in w.devices}
    fleet = {d.name: d for d in release.fleet.select(names)}
    out = []
    for name in names:
        if name not in planned:
            entry = DeviceEntry(device=name, group=fleet[name].group, decision=Decision.NOT_IN_ANY_WAVE)
        elif name not in entries:
            entry = DeviceEntry(device=name, group=fleet[name].group, decision=Decision.NOT_REACHED)
        else:
            entry = entries[name]
        out.append(entry)
    aborted = any(w.outcome == WaveOutcome.ABORTED for w in waves)
    undid = any(e.decision in UNDONE for e in out)
    peaks = [r.controller["connections_peak"] for r in results if r.controller is not None]
    return RolloutOutcome(
        verdict=verdict(out, aborted, undid), rollout_id=release.rollout_id,
        shipping=shipping(release.candidate), waves=waves,
        controller={"tasks": len(results), "connections_peak_per_task": max(peaks, default=0)},
        devices=out,
    )  # fmt: skip


def start() -> ShardState:
    """The state a sharded release starts with."""
    return ShardState(waves=[], results=[], activated=[], aborted=False)


def wave_batches(state: ShardState, batches: Batches, number: int) -> list[list[str]]:
    """Wave ``number``'s batches to prepare; none once the release aborted or past its last wave."""
    return [] if state.aborted or number > len(batches) else batches[number - 1]


def after_prepare(
    state: ShardState, number: int, prepared: list[BatchResult], cfg: DeploymentParams
) -> tuple[ShardState, list[list[str]]]:
    """Decide wave ``number`` from its prepared batches; the batches to activate (none: aborted)."""
    if not prepared:  # the release aborted earlier, or has fewer waves
        return state, []
    state = state.model_copy()
    state.update(results=state.results + prepared, waves=[*state.waves, decide_wave(number, prepared, cfg)])
    if state.waves[-1].outcome == WaveOutcome.ABORTED:
        waiting = [passed_in(b) for b in prepared]
        state.update(
            aborted=True, results=state.results + [_not_activated(b) for b in waiting],
            waiting=[n for b in waiting for n in b],
        )  # fmt: skip
        return state, []
    return state, [passed_in(b) for b in prepared]


def after_activate(state: ShardState, done: list[BatchResult]) -> ShardState:
    on = [e.device for r in done for e in r.entries if e.decision == Decision.ACTIVATED]
    state = state.model_copy()
    state.update(results=state.results + done, activated=state.activated + on)
    return state


def closing(state: ShardState, batches: Batches, batch_size: int) -> list[tuple[str, list[str]]]:
    """The last tasks: on an abort, roll back what earlier waves activated and give back the
    aborted wave's leases; otherwise give back the leases earlier waves kept."""
    if state.aborted:
        tasks = [("roll_back", b) for b in _cut(state.activated, batch_size)]
        return tasks + [("release", b) for b in _cut(state.waiting or [], batch_size)]
    last = {name for b in batches[-1] for name in b} if batches else set()
    early = [n for n in state.activated if n not in last]
    return [("release", b) for b in _cut(early, batch_size)]


def close_batch(release: Release, task: tuple[str, list[str]]) -> BatchResult:
    kind, names = task
    return roll_back_batch(release, names) if kind == "roll_back" else release_batch(release, names)


def sharded_rollout(release: Release, names: list[str], batch_size: int = MAX_BATCH) -> RolloutOutcome:
    """The whole release as its tasks, one after another in this process (an orchestrator runs
    each wave's batches at once on its workers). Returns the merged release record."""
    batches = plan(release.fleet, names, release.cfg.waves, batch_size)
    state = start()
    for number in range(1, len(batches) + 1):
        last = number == len(batches)
        prepared = [prepare_batch(release, number, b) for b in wave_batches(state, batches, number)]
        state, ready = after_prepare(state, number, prepared, release.cfg)
        state = after_activate(state, [activate_batch(release, number, b, last) for b in ready])
    closed = [close_batch(release, task) for task in closing(state, batches, batch_size)]
    return merge(release, names, state.waves, state.results + closed)


def _not_activated(names: list[str]) -> BatchResult:
    reason = "its wave was aborted"
    entries = [DeviceEntry(device=n, decision=Decision.NOT_ACTIVATED, reason=reason) for n in names]
    return BatchResult(entries=entries)


def _cut(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]
