"""Work on many devices at once, in a bounded pool, with progress; one outcome per device."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from kedro_edge.fleet.inventory import Device
from kedro_edge.fleet.records import Status
from kedro_edge.fleet.ssh import DeviceError
from kedro_edge.progress import progress_bar

REFRESH_PER_SECOND = 2  # a redraw costs the controller CPU that a fleet's devices are counted in


@dataclass
class Outcome:
    device: str
    status: Status
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    kind: str | None = None  # a failure's DeviceError.kind: unreachable | security | device


def for_each(
    devices: list[Device],
    work: Callable[[Device], dict[str, Any]],
    max_parallel: int,
    description: str,
) -> list[Outcome]:
    """Run ``work`` per device, at most ``max_parallel`` at once; every device gets an outcome.

    A ``DeviceError`` is that device's outcome, never the others'. Anything else is a bug in
    the controller: the devices not started are cancelled and it is raised, not dressed up as
    a failed device (which would roll a release back for the wrong reason).
    """
    outcomes: dict[str, Outcome] = {}
    if not devices:
        return []
    with (
        progress_bar(REFRESH_PER_SECOND) as bar,
        ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool,
    ):
        task = bar.add_task(description, total=len(devices), status="")
        futures = {pool.submit(work, d): d for d in devices}
        for future in as_completed(futures):
            device = futures[future]
            try:
                outcomes[device.name] = Outcome(device.name, Status.OK, data=future.result())
            except DeviceError as exc:
                outcomes[device.name] = Outcome(device.name, Status.FAILED, error=str(exc), kind=exc.kind)
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
            failed = sum(o.status == Status.FAILED for o in outcomes.values())
            bar.update(task, advance=1, status=f"{failed} failed" if failed else "")
    return [outcomes[d.name] for d in devices]
