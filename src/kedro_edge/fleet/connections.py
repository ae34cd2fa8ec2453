"""A rollout's connections to its devices: reused between steps, at most ``limit`` open at once.

A device's connection is opened by its first step and kept for the next (install, then
activate: one handshake, not two). A fleet of thousands would otherwise hold thousands of
connections, each a socket and a paramiko reader thread on the controller; beyond ``limit``
the least recently used connection that no step is using is closed, and opened again (one
more handshake) if its device is needed later. An endpoint's counters survive that.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kedro_edge.fleet.inventory import Device
from kedro_edge.fleet.ssh import Endpoint, connect


class Connections:
    """Endpoints by device name; ``use`` lends one, ``close`` ends them all."""

    def __init__(self, root: Path, trust_new_key: bool, limit: int) -> None:
        self.root, self.trust_new_key, self.limit = root, trust_new_key, limit
        self.endpoints: dict[str, Endpoint] = {}
        self.peak = 0  # the most connections open at once (the controller's sockets and threads)
        self._open: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, device: Device) -> Iterator[Endpoint]:
        """The device's endpoint (it connects on its first command); idle ones beyond ``limit`` close."""
        name = device.name
        with self._lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                endpoint = self.endpoints[name] = connect(device, self.root, self.trust_new_key)
            self._busy[name] += 1
            self._open[name] = None
            self._open.move_to_end(name)
            self._evict()
            self.peak = max(self.peak, len(self._open))
        try:
            yield endpoint
        finally:
            with self._lock:
                self._busy[name] -= 1

    def _evict(self) -> None:
        """Close least recently used idle connections until ``limit`` are open (busy ones stay)."""
        if len(self._open) <= self.limit:
            return
        for name in list(self._open):
            if len(self._open) <= self.limit:
                return
            if not self._busy[name]:
                del self._open[name]
                self.endpoints[name].close()

    def close(self) -> None:
        with self._lock:
            for endpoint in self.endpoints.values():
                endpoint.close()
            self._open.clear()
