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

Every task takes plain data (device names, the rollout id, record entries) and rebuilds what it
needs from the release's inputs, so it can run in another process or on another machine. All
tasks hold the devices under ONE rollout id (``Release.rollout_id``): a device's lease names
the release, not the task, so the task that activates a device finds the lease the task that
installed it took. Between two tasks nothing renews a lease: a wave's activation must start
within ``lease_ttl`` of its installation (a lapsed lease that nobody took is simply taken
again; one another rollout took makes that device fail, as it should).

``sharded_rollout`` runs the same tasks in order in this process: the reference for what an
orchestrator's run must give (README, "Orchestrator: Dagster", has the Dagster job).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kedro_edge.config import DeploymentParams
from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.rollout import Rollout, plan_waves, shipping, verdict

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


def plan(fleet: Fleet, names: list[str], waves: list[int | str], batch_size: int = MAX_BATCH) -> Batches:
    """The release's waves (as a single controller plans them), each cut into batches."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size {batch_size} must be between 1 and {MAX_BATCH}")
    return [
        [[d.name for d in wave[i : i + batch_size]] for i in range(0, len(wave), batch_size)]
        for wave in plan_waves(fleet.select(names), waves)
    ]


def prepare_batch(release: Release, number: int, names: list[str]) -> dict[str, Any]:
    """Install, measure and gate one batch of wave ``number``: its entries and failures."""
    devices = release.fleet.select(names)
    rollout = release.rollout()
    with rollout.running():
        passed = rollout.prepare(number, devices)
        rollout.give_back_leases([d for d in devices if d not in passed])
    return {"wave": number, "entries": rollout.entries(devices), "failed": rollout.waves[-1]["failed"],
            "controller": rollout.controller()}  # fmt: skip


def decide_wave(number: int, batches: list[dict[str, Any]], cfg: DeploymentParams) -> dict[str, Any]:
    """The wave's record over all its batches: ``outcome`` ``passed`` or ``aborted``."""
    names = [e["device"] for b in batches for e in b["entries"]]
    failed = [name for b in batches for name in b["failed"]]
    share = 100 * len(failed) / len(names)
    outcome = "aborted" if share > cfg.max_failure_percentage else "passed"
    return {"wave": number, "devices": names, "failed": failed, "failure_percentage": share,
            "outcome": outcome, "batches": len(batches)}  # fmt: skip


def passed_in(batch: dict[str, Any]) -> list[str]:
    return [e["device"] for e in batch["entries"] if e["decision"] == "passed"]


def activate_batch(release: Release, number: int, names: list[str], last: bool) -> dict[str, Any]:
    """Activate the devices of one batch that passed; the last wave gives their leases back."""
    rollout = release.rollout()
    with rollout.running():
        rollout.activate(number, release.fleet.select(names), last)
    return {"entries": rollout.entries(release.fleet.select(names)), "controller": rollout.controller()}


def roll_back_batch(release: Release, names: list[str]) -> dict[str, Any]:
    """An aborted release: these devices (activated by earlier waves) go back; leases given back."""
    rollout = release.rollout()
    with rollout.running():
        rollout.roll_back(release.fleet.select(names))
    return {"entries": rollout.entries(release.fleet.select(names)), "controller": rollout.controller()}


def release_batch(release: Release, names: list[str]) -> dict[str, Any]:
    """Give back the leases these devices still hold under the release's rollout id."""
    devices = release.fleet.select(names)
    rollout = release.rollout()
    with rollout.running():
        for d in devices:
            rollout.keeper.hold(d.name)  # held by an earlier task, under the same id
        rollout.give_back_leases(devices)
    return {"entries": rollout.entries(devices), "controller": rollout.controller()}


def merge(
    release: Release, names: list[str], waves: list[dict[str, Any]], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """One release record from every task's results, in task order (later phases update earlier)."""
    entries: dict[str, dict[str, Any]] = {}
    costs = ("ssh_connections", "remote_commands", "bytes_sent")
    for result in results:
        for e in result["entries"]:
            mine = entries.setdefault(e["device"], {})
            spent = {k: mine.get(k, 0) + e.get(k, 0) for k in costs if k in e or k in mine}
            if e.get("decision") == "not reached" and mine.get("decision"):
                e = {k: v for k, v in e.items() if k != "decision"}  # a later task without news
            mine.update(e, **spent)
    planned = {name for w in waves for name in w["devices"]}
    fleet = {d.name: d for d in release.fleet.select(names)}
    out = []
    for name in names:
        entry = entries.get(name) or {"device": name, "group": fleet[name].group, "decision": "not reached"}
        if name not in planned:
            entry = {"device": name, "group": fleet[name].group, "decision": "not in any wave"}
        out.append(entry)
    aborted = any(w["outcome"] == "aborted" for w in waves)
    undid = any(e["decision"] in ("rolled back", "rollback failed") for e in out)
    peaks = [r["controller"]["connections_peak"] for r in results if "controller" in r]
    return {
        "verdict": verdict(out, aborted, undid), "rollout_id": release.rollout_id,
        "shipping": shipping(release.candidate), "waves": waves,
        "controller": {"tasks": len(results), "connections_peak_per_task": max(peaks, default=0)},
        "devices": out,
    }  # fmt: skip


Runner = Callable[[Callable[..., dict[str, Any]], list[tuple]], list[dict[str, Any]]]


def serially(task: Callable[..., dict[str, Any]], calls: list[tuple]) -> list[dict[str, Any]]:
    return [task(*args) for args in calls]


def sharded_rollout(
    release: Release, names: list[str], batch_size: int = MAX_BATCH, run: Runner = serially
) -> dict[str, Any]:
    """The whole release as its tasks, each wave's batches through ``run`` (one by one here; an
    orchestrator runs them at once on its workers). Returns the merged release record."""
    batches = plan(release.fleet, names, release.cfg.waves, batch_size)
    waves: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    activated: list[str] = []
    for number, wave in enumerate(batches, start=1):
        last = number == len(batches)
        prepared = run(prepare_batch, [(release, number, b) for b in wave])
        results += prepared
        waves.append(decide_wave(number, prepared, release.cfg))
        if waves[-1]["outcome"] == "aborted":
            waiting = [passed_in(b) for b in prepared]
            results += [_not_activated(b) for b in waiting]
            results += run(release_batch, [(release, b) for b in waiting if b])
            results += run(roll_back_batch, [(release, b) for b in _cut(activated, batch_size)])
            break
        done = run(activate_batch, [(release, number, passed_in(b), last) for b in prepared])
        results += done
        activated += [e["device"] for r in done for e in r["entries"] if e["decision"] == "activated"]
    else:
        early = [n for n in activated if n not in {name for b in batches[-1] for name in b}]
        results += run(release_batch, [(release, b) for b in _cut(early, batch_size)])
    return merge(release, names, waves, results)


def _not_activated(names: list[str]) -> dict[str, Any]:
    entries = [{"device": n, "decision": "not activated", "reason": "its wave was aborted"} for n in names]
    return {"entries": entries}


def _cut(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]
