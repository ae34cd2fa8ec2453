"""Rollout leases: the id a rollout holds each device under, and the thread that renews them.

A device's lease (``<workdir>/.rollout``) names one rollout by a random id, so two rollouts
exclude each other even when they ship the same model. It lasts ``ttl`` seconds unless
renewed; every leased command renews it, and a ``Keeper`` renews the leases a live rollout
holds that no command renewed for ``ttl / 3`` seconds, so a long wave keeps them and a dead
controller's lapse within ``ttl``.

The id of a rollout of a given model is kept in ``<fleet root>/.kedro-edge/rollouts/<sha>.json``
while it runs (under an flock): a rollout that was killed and is run again takes the same id,
so it takes back its own leases at once. A second rollout of the same model started while the
first is alive gets a fresh id, and the devices' leases keep the two apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kedro_edge.fleet.ssh import DeviceError


@dataclass(frozen=True)
class Lease:
    id: str
    ttl: float = 600.0  # seconds the device keeps it without a renewal
    lock_timeout: float = 60.0  # seconds a command waits for another rollout's lease

    def args(self) -> list[str]:
        return ["--lease", self.id, "--ttl", f"{self.ttl:g}", "--lock-timeout", f"{self.lock_timeout:g}"]


@contextlib.contextmanager
def rollout_id(root: Path, sha: str) -> Iterator[tuple[str, bool]]:
    """``(id, resumed)`` for a rollout of version ``sha``; the record goes when the body returns.

    An exception (an interrupted run) keeps the record, so the next run resumes under the same id.
    """
    folder = Path(root) / ".kedro-edge" / "rollouts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.json"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live rollout of the same model: ours is another one
            yield secrets.token_hex(8), False
            return
        raw = os.read(fd, 4096)
        try:
            known = json.loads(raw)["id"] if raw else None
        except (ValueError, KeyError, TypeError):
            known = None
        resumed = known is not None
        if not resumed:
            known = secrets.token_hex(8)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"id": known, "sha256": sha}).encode(), 0)
            os.fsync(fd)
        yield known, resumed
        path.unlink(missing_ok=True)  # finished (whatever the verdict): nothing to resume
    finally:
        os.close(fd)


class Keeper:
    """Renews the leases of the devices in ``held`` that no command has touched for ``interval`` s.

    Every leased agent command renews the lease on the device, so only devices idle that long
    (an earlier wave's, waiting for the rollout to end) need a renewal of their own; they are
    renewed ``workers`` at a time, so thousands of held leases are renewed within the interval.
    A device whose renewal fails is dropped from ``held`` (its lease then lapses on its own).
    """

    def __init__(self, renew: Callable[[str], None], interval: float, workers: int = 1) -> None:
        self.renew, self.interval, self.workers = renew, interval, max(1, workers)
        self.last: dict[str, float] = {}  # held device -> when a command last renewed its lease
        self.renewals = 0  # renewals sent (the rest rode on the rollout's own commands)
        self.error: BaseException | None = None  # a bug in a renewal, raised on exit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    @property
    def held(self) -> set[str]:
        with self._lock:
            return set(self.last)

    def hold(self, name: str) -> None:
        """``name``'s lease is ours, renewed on the device just now."""
        self.touch(name, hold=True)

    def touch(self, name: str, hold: bool = False) -> None:
        """A command renewed ``name``'s lease on the device just now (if it is held, or ``hold``)."""
        with self._lock:
            if hold or name in self.last:
                self.last[name] = time.monotonic()

    def drop(self, name: str) -> None:
        with self._lock:
            self.last.pop(name, None)

    def _stale(self) -> list[str]:
        horizon = time.monotonic() - self.interval
        with self._lock:
            return sorted(name for name, when in self.last.items() if when <= horizon)

    def _renew_one(self, name: str) -> None:
        if self._stop.is_set() or self.error is not None:
            return
        try:
            self.renew(name)
            self.touch(name)
        except DeviceError:  # the device's lease lapses; its own step reports why
            self.drop(name)
        except BaseException as exc:  # a bug: raised in the rollout's thread on exit
            self.error = exc
        with self._lock:
            self.renewals += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval / 3):
            stale = self._stale()
            if not stale:
                continue
            with ThreadPoolExecutor(min(self.workers, len(stale)), thread_name_prefix="lease") as pool:
                list(pool.map(self._renew_one, stale))
            if self.error is not None:
                return

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
