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

Between tasks a release carries a small ``state`` (plain data): ``start``, then per wave
``wave_batches`` -> ``prepare_batch`` per batch -> ``after_prepare`` (the decision and the
batches to activate) -> ``activate_batch`` per batch -> ``after_activate``; then ``closing``
-> ``close_batch`` per task -> ``merge``. ``sharded_rollout`` runs exactly that in this
process, one task after another; ``pipelines/sharded_release.py`` runs it as a Dagster job,
each task a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.fleet.params import DeploymentParams
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


def start() -> dict[str, Any]:
    """The state a sharded release carries from task to task (plain data)."""
    return {"waves": [], "results": [], "activated": [], "aborted": False}


def wave_batches(state: dict[str, Any], batches: Batches, number: int) -> list[list[str]]:
    """Wave ``number``'s batches to prepare; none once the release aborted or past its last wave."""
    return [] if state["aborted"] or number > len(batches) else batches[number - 1]


def after_prepare(
    state: dict[str, Any], number: int, prepared: list[dict[str, Any]], cfg: DeploymentParams
) -> tuple[dict[str, Any], list[list[str]]]:
    """Decide wave ``number`` from its prepared batches; the batches to activate (none: aborted)."""
    if not prepared:  # the release aborted earlier, or has fewer waves
        return state, []
    state = {**state, "results": state["results"] + prepared}
    state["waves"] = state["waves"] + [decide_wave(number, prepared, cfg)]
    if state["waves"][-1]["outcome"] == "aborted":
        waiting = [passed_in(b) for b in prepared]
        state["aborted"] = True
        state["results"] = state["results"] + [_not_activated(b) for b in waiting]
        state["waiting"] = [n for b in waiting for n in b]
        return state, []
    return state, [passed_in(b) for b in prepared]


def after_activate(state: dict[str, Any], done: list[dict[str, Any]]) -> dict[str, Any]:
    on = [e["device"] for r in done for e in r["entries"] if e["decision"] == "activated"]
    return {**state, "results": state["results"] + done, "activated": state["activated"] + on}


def closing(state: dict[str, Any], batches: Batches, batch_size: int) -> list[tuple[str, list[str]]]:
    """The last tasks: on an abort, roll back what earlier waves activated and give back the
    aborted wave's leases; otherwise give back the leases earlier waves kept."""
    if state["aborted"]:
        tasks = [("roll_back", b) for b in _cut(state["activated"], batch_size)]
        return tasks + [("release", b) for b in _cut(state.get("waiting", []), batch_size)]
    last = {name for b in batches[-1] for name in b} if batches else set()
    early = [n for n in state["activated"] if n not in last]
    return [("release", b) for b in _cut(early, batch_size)]


def close_batch(release: Release, task: tuple[str, list[str]]) -> dict[str, Any]:
    kind, names = task
    return roll_back_batch(release, names) if kind == "roll_back" else release_batch(release, names)


def sharded_rollout(release: Release, names: list[str], batch_size: int = MAX_BATCH) -> dict[str, Any]:
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
    return merge(release, names, state["waves"], state["results"] + closed)


def _not_activated(names: list[str]) -> dict[str, Any]:
    entries = [{"device": n, "decision": "not activated", "reason": "its wave was aborted"} for n in names]
    return {"entries": entries}


def _cut(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]
