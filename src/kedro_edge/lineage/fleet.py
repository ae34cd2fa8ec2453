"""A model on the fleet: which devices hold it, run it or would roll back to it, and what their
own history says happened to it. Read-only: one ``facts`` command per device, as ``kedro edge
status`` does (host keys verified, nothing uploaded)."""

from __future__ import annotations

from typing import Any

from kedro_edge.fleet.commands import survey
from kedro_edge.fleet.inventory import Device, Fleet


def held(fleet: Fleet, devices: list[Device] | None = None) -> list[dict[str, Any]]:
    """Each device's versions, active and previous ones and history, or why it could not say."""
    out = []
    for o in survey(fleet, devices):
        if o.status != "ok":
            out.append({"device": o.device, "error": o.error})
            continue
        d = o.data
        out.append(
            {
                "device": o.device,
                "current": d.get("current"),
                "previous": d.get("previous"),
                "released": d.get("released") or [],
                "versions": d.get("versions") or [],
                "history": d.get("history") or [],
            }
        )
    return out


def of_model(states: list[dict[str, Any]], sha: str) -> list[dict[str, Any]]:
    """What each device says about ``sha``: held, active, previous, still a standing release, and
    every history event naming it (released, refused, rolled back to or from, forced)."""
    out = []
    for s in states:
        if "error" in s:
            out.append({"device": s["device"], "error": s["error"]})
            continue
        events = [e for e in s["history"] if sha in (e.get("sha"), e.get("to"))]
        out.append(
            {
                "device": s["device"],
                "holds": sha in s["versions"],
                "active": s["current"] == sha,
                "previous": s["previous"] == sha,
                "standing_release": sha in s["released"],
                "events": events,
            }
        )
    return out
