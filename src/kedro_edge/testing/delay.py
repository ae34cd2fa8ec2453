"""A delay-injecting TCP proxy for loopback fleets: what ``tc netem`` would do, in user space.

This kernel has no netem, so a link's latency is modelled here: every chunk read from one side is
written to the other ``delay`` seconds after it arrived, in order, each direction on its own
(a 25 ms delay each way is a 50 ms round trip). Delays overlap, as on a real link: a stream
is late by the delay, not slowed by it. It listens on loopback addresses only and forwards to
loopback addresses only.

Per connection it counts the bytes each way and the **turns**: how often the traffic changed
from client -> server to server -> client, which for a request/response protocol is the number
of round trips the client waited for. One JSON line per closed connection goes to ``--stats``.

It runs as its own process (so its CPU is not the controller's)::

    python -m kedro_edge.testing.delay --delay-ms 25 --stats stats.jsonl \\
        127.0.1.2:2222=127.0.0.2:2222 127.0.1.3:2222=127.0.0.3:2222

and prints ``ready`` once every listener accepts. ``DelayProxy`` starts and stops it from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY = "ready"
CHUNK = 65536
LINGER = 1.0  # seconds a connection stays half-closed before the proxy closes it


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: the delay proxy serves 127.0.0.0/8 only")
    return host


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return _loopback(host), int(port)


@dataclass
class _Link:
    """One proxied connection's counters."""

    listen: str
    upstream: str
    opened: float = field(default_factory=time.monotonic)
    bytes_up: int = 0
    bytes_down: int = 0
    turns: int = 0
    _last: str = "down"

    def saw(self, direction: str, size: int) -> None:
        if direction == "up":
            self.bytes_up += size
        else:
            self.bytes_down += size
            if self._last == "up":
                self.turns += 1
        self._last = direction

    def to_dict(self) -> dict[str, Any]:
        return {
            "listen": self.listen, "upstream": self.upstream, "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down, "turns": self.turns,
            "seconds": round(time.monotonic() - self.opened, 4),
        }  # fmt: skip


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, link: _Link, direction: str
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            if data:
                link.saw(direction, len(data))
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


async def _serve(pairs: list[tuple[tuple[str, int], tuple[str, int]]], delay: float, stats: Path | None):
    out = stats.open("a", buffering=1) if stats else None

    def handler(upstream: tuple[str, int], listen: str):
        async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
            link = _Link(listen, f"{upstream[0]}:{upstream[1]}")
            try:
                s_reader, s_writer = await asyncio.open_connection(*upstream)
            except OSError:
                c_writer.close()
                return
            # TCP's handshake: a client's connect() returns one round trip after it began, so
            # nothing crosses before then (and each side's first bytes take one more delay)
            await asyncio.sleep(2 * delay)
            pumps = [
                asyncio.create_task(_pump(c_reader, s_writer, delay, link, "up")),
                asyncio.create_task(_pump(s_reader, c_writer, delay, link, "down")),
            ]
            try:
                # one side closed and that reached the other: give the other side a moment to
                # close too (a server may wait on its children), then close both
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                _, pending = await asyncio.wait(pending, timeout=LINGER)
                for task in pending:
                    task.cancel()
            finally:
                for w in (c_writer, s_writer):
                    w.close()
                if out is not None:
                    out.write(json.dumps(link.to_dict()) + "\n")

        return handle

    servers = [
        await asyncio.start_server(handler(up, f"{lh}:{lp}"), lh, lp, reuse_address=True)
        for (lh, lp), up in pairs
    ]
    print(READY, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    if out is not None:
        out.close()


class DelayProxy:
    """The proxy as a child process: ``mapping`` listen -> upstream, ``(host, port)`` pairs."""

    def __init__(
        self, mapping: dict[tuple[str, int], tuple[str, int]], delay_ms: float, stats: Path | None = None
    ) -> None:
        self.mapping, self.delay_ms, self.stats = mapping, delay_ms, stats
        self.proc: subprocess.Popen | None = None

    def start(self) -> DelayProxy:
        argv = [sys.executable, "-m", "kedro_edge.testing.delay", "--delay-ms", f"{self.delay_ms:g}"]
        argv += ["--stats", str(self.stats)] if self.stats else []
        argv += [f"{lh}:{lp}={uh}:{up}" for (lh, lp), (uh, up) in self.mapping.items()]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != READY:
            self.proc.kill()
            raise RuntimeError(f"delay proxy did not start: {line or self.proc.stderr.read().strip()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def links(self) -> list[dict[str, Any]]:
        """Every closed connection's counters so far."""
        if not self.stats or not self.stats.exists():
            return []
        return [json.loads(line) for line in self.stats.read_text().splitlines() if line.strip()]

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kedro_edge.testing.delay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--delay-ms", type=float, required=True, help="added to each direction")
    parser.add_argument("--stats", type=Path, help="append one JSON line per closed connection")
    parser.add_argument("pairs", nargs="+", metavar="LISTEN=UPSTREAM", help="127.0.1.2:2222=127.0.0.2:2222")
    args = parser.parse_args(argv)
    try:
        pairs = [(_address(a), _address(b)) for a, _, b in (p.partition("=") for p in args.pairs)]
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_serve(pairs, args.delay_ms / 1000, args.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
