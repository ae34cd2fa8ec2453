"""Fleet commands outside a rollout: ask devices what they are, trust host keys, roll back.

Each is one function over selected devices in a bounded pool; the CLI (``kedro edge ...``)
is a thin shell over them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro_edge.fleet import device as ops
from kedro_edge.fleet.inventory import Device, Fleet
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.pool import Outcome, for_each
from kedro_edge.fleet.ssh import Endpoint, SSHEndpoint, connect


def _on_each(
    fleet: Fleet,
    devices: list[Device] | None,
    work: Callable[[Endpoint], dict[str, Any]],
    max_parallel: int,
    what: str,
    trust_new_key: bool = False,
) -> list[Outcome]:
    """``work(endpoint)`` on each device over its own connection, closed whatever happens."""
    root = Path(fleet.root)

    def one(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root, trust_new_key)
        try:
            return work(endpoint)
        finally:
            endpoint.close()

    return for_each(fleet.devices if devices is None else devices, one, max_parallel, what)


def survey(
    fleet: Fleet,
    devices: list[Device] | None = None,
    max_parallel: int = 16,
    trust_new_host_keys: bool = False,
) -> list[Outcome]:
    """Reach every device and ask what it is (read-only); an unreachable device's outcome says why."""
    return _on_each(fleet, devices, ops.facts, max_parallel, "survey", trust_new_host_keys)


def _host_key(endpoint: Endpoint) -> dict[str, Any]:
    if not isinstance(endpoint, SSHEndpoint):
        return {"fingerprint": None, "recorded": False, "known_hosts": None, "pinned": False}
    return endpoint.host_key()


def trust_host_keys(
    fleet: Fleet, devices: list[Device] | None = None, max_parallel: int = 16
) -> list[Outcome]:
    """Accept each device's host key if its known_hosts lacks it, and record it there (explicit opt-in).

    Runs nothing on the devices. A changed or ``@revoked`` key is still refused, and so is a device
    with no known_hosts file to record into. Each outcome's data is ``SSHEndpoint.host_key``'s.
    """
    return _on_each(fleet, devices, _host_key, max_parallel, "trust", trust_new_key=True)


def rollback_devices(
    fleet: Fleet,
    devices: list[Device] | None = None,
    to: str | None = None,
    force: bool = False,
    max_parallel: int = 16,
    lock_timeout: float = 5.0,
) -> list[Outcome]:
    """Return each device to the release before its current one (or ``to``, released there).

    Takes the device's lease for the switch, so a device in the middle of a rollout says
    ``busy`` instead of being switched under it. ``force`` activates a ``to`` that was never
    released there (recorded as ``forced`` in the device's history).
    """
    lease = Lease(f"rollback-{secrets.token_hex(6)}", ttl=60.0, lock_timeout=lock_timeout)

    def back(endpoint: Endpoint) -> dict[str, Any]:
        return ops.rollback(endpoint, lease, to=to, force=force, release=True)

    return _on_each(fleet, devices, back, max_parallel, "rollback")
