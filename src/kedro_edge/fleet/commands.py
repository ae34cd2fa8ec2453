"""Fleet commands outside a rollout: ask devices what they are, trust host keys, roll back.

Each is one function over selected devices in a bounded pool; the CLI (``kedro edge ...``)
is a thin shell over them.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from kedro_edge.fleet import device as ops
from kedro_edge.fleet.inventory import Device, Fleet
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.pool import Outcome, for_each
from kedro_edge.fleet.ssh import SSHEndpoint, connect


def survey(
    fleet: Fleet,
    devices: list[Device] | None = None,
    max_parallel: int = 16,
    trust_new_host_keys: bool = False,
) -> list[Outcome]:
    """Reach every device and ask what it is (read-only); an unreachable device's outcome says why."""
    root = Path(fleet.root)

    def ask(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root, trust_new_host_keys)
        try:
            return ops.facts(endpoint)
        finally:
            endpoint.close()

    return for_each(fleet.devices if devices is None else devices, ask, max_parallel, "survey")


def trust_host_keys(
    fleet: Fleet, devices: list[Device] | None = None, max_parallel: int = 16
) -> list[Outcome]:
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

    return for_each(fleet.devices if devices is None else devices, accept, max_parallel, "trust")


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
    root = Path(fleet.root)
    lease = Lease(f"rollback-{secrets.token_hex(6)}", ttl=60.0, lock_timeout=lock_timeout)

    def back(device: Device) -> dict[str, Any]:
        endpoint = connect(device, root)
        try:
            return ops.rollback(endpoint, lease, to=to, force=force, release=True)
        finally:
            endpoint.close()

    return for_each(fleet.devices if devices is None else devices, back, max_parallel, "rollback")
