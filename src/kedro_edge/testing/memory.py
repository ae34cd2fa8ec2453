"""Peak anonymous memory of this process: what a float copy of a data set would show.

A memory-mapped store's pages count in RSS as file-backed (reclaimable) memory once read;
a copy counts as ``RssAnon``. A thread samples ``/proc/self/status`` every few milliseconds
(Linux), so a test or benchmark can bound what streaming costs.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def rss_anon_bytes(pid: int | str = "self") -> int:
    """A process's anonymous resident memory now (``RssAnon``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/{pid}/status has no RssAnon (not Linux?)")


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def tree_anon_bytes() -> int:
    """``RssAnon`` of this process plus its child processes' (data loader workers)."""
    total = rss_anon_bytes()
    for pid in _descendants(os.getpid()):
        try:
            total += rss_anon_bytes(pid)
        except OSError:  # it exited meanwhile
            pass
    return total


class PeakAnon:
    """``with PeakAnon() as peak: ...`` then ``peak.bytes`` (the highest sample) and
    ``peak.growth`` (above the value on entry); ``children`` adds child processes' memory."""

    def __init__(self, interval_s: float = 0.005, children: bool = False) -> None:
        self._interval = interval_s
        self._read = tree_anon_bytes if children else rss_anon_bytes
        self._stop = threading.Event()
        self.start = self.bytes = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, self._read())
            time.sleep(self._interval)

    def __enter__(self) -> PeakAnon:
        self.start = self.bytes = self._read()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, self._read())

    @property
    def growth(self) -> int:
        return self.bytes - self.start
