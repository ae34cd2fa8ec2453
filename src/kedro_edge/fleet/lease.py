"""Rollout leases: the id a rollout holds each device under, and the thread that renews them.

A device's lease (``<workdir>/.rollout``) names one rollout by a random id, so two rollouts
exclude each other even when they ship the same model. It lasts ``ttl`` seconds unless
renewed; a ``Keeper`` renews every lease a live rollout holds every ``ttl / 3`` seconds, so a
long wave keeps them and a dead controller's lapse within ``ttl``.

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
from collections.abc import Callable, Iterator
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
    """Renews the lease on every device in ``held`` every ``interval`` seconds, in one thread.

    A device whose renewal fails is dropped from ``held`` (its lease then lapses on its own).
    """

    def __init__(self, renew: Callable[[str], None], interval: float) -> None:
        self.renew, self.interval = renew, interval
        self.held: set[str] = set()
        self.error: BaseException | None = None  # a bug in a renewal, raised on exit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def hold(self, name: str) -> None:
        with self._lock:
            self.held.add(name)

    def drop(self, name: str) -> None:
        with self._lock:
            self.held.discard(name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                names = sorted(self.held)
            for name in names:
                if self._stop.is_set():
                    return
                try:
                    self.renew(name)
                except DeviceError:  # the device's lease lapses; its own step reports why
                    self.drop(name)
                except BaseException as exc:  # a bug: raised in the rollout's thread on exit
                    self.error = exc
                    return

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
