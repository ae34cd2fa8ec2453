"""What the controller does on ONE device, each step one agent command (one exec channel).

A rollout's steps on a device, all under the rollout's lease (``kedro_edge.fleet.lease``):

1. ``ship``, one command (``begin --files``): take the lease, remove stale ``.incoming-*``
   uploads, say whether the version is already there, refuse if the disk cannot hold it; if it
   is not there, the files stream over the same channel's stdin into
   ``versions/.incoming-<sha>-<pid>/`` (the model compressed, ``deployment.codec``: the agent
   decompresses it with Python's standard library), the agent checks the sha256 of the
   decompressed model ON the device as it arrives and renames the folder to ``versions/<sha>``.
   A short or failed transfer removes its folder. (No SFTP session: its request/response per
   chunk and per file is what a slow link pays for; an unchanged version moves 0 bytes.) The
   same command can then benchmark it (``measure``);
2. else ``benchmark`` against the active release; then ``activate`` (recorded as released; old
   versions collected), ``refuse`` or ``rollback`` (recorded in the device's history).

Every agent command goes through one POSIX ``sh`` script that makes the workdir, checks that
this agent version is there and ``exec``s it: the agent is shipped (by hash) only on first
contact. Arguments are passed as arguments, never pasted into the script.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kedro_edge.bench import agent as agent_module
from kedro_edge.fleet.candidate import MODEL, Candidate
from kedro_edge.fleet.inventory import Group
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.ssh import DeviceError, Endpoint, Feed, python_of, workdir_of

AGENT_SOURCE = Path(agent_module.__file__).read_bytes()
AGENT_SHA = hashlib.sha256(AGENT_SOURCE).hexdigest()
GRACE = 5.0  # seconds the controller waits beyond the agent's own deadline
CHUNK = 256 * 1024  # bytes per write when streaming a version (paramiko splits into packets)

# $1 workdir, $2 agent sha256, then the agent's command line.
AGENT = r"""set -e
mkdir -p -- "$1/versions" "$1/agent"
cd -- "$1"
if [ -f "agent/$2.py" ]; then shift 2; exec "$@"; fi
echo agent=missing
echo "workdir=$(pwd -P)"
"""


def call(endpoint: Endpoint, command: str, *args: str, feed: Feed | None = None) -> dict[str, Any]:
    """``agent.py COMMAND . ARGS`` in the device's workdir: its JSON answer, or a DeviceError."""
    return _invoke(endpoint, command, [".", *args], feed)


def _invoke(endpoint: Endpoint, command: str, args: list[str], feed: Feed | None = None) -> dict[str, Any]:
    """Run the agent (shipping it first if the device lacks this version of it).

    The agent ends itself after the device's ``command_timeout`` (``--deadline``), so a command
    the controller gives up on is not left running on the device.
    """
    device = endpoint.device
    limit = device.command_timeout
    tail = [python_of(device), f"agent/{AGENT_SHA}.py", "--deadline", f"{limit:g}", command, *args]
    argv = ["sh", "-c", AGENT, "kedro-edge", workdir_of(device), AGENT_SHA, *tail]
    started = time.monotonic()
    result = endpoint.run(argv, timeout=limit + GRACE, feed=feed)
    if "agent=missing" in result.stdout.splitlines():
        workdir = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)["workdir"]
        _ship_agent(endpoint, workdir)
        started = time.monotonic()
        result = endpoint.run(argv, timeout=limit + GRACE, feed=feed)
    what = "benchmark" if command == "bench" else command
    return _answer(result, device.target, what, limit, time.monotonic() - started)


def _answer(result, target: str, command: str, limit: float, elapsed: float = 0.0) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    try:
        payload = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        if not lines and result.code != 0 and elapsed >= limit:  # SIGALRM: the agent's own deadline
            raise DeviceError(f"{target}: {command} timed out after {limit:g} s (ended on the device)")
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if result.code == 0 and not lines:
            tail = "no output"
        raise DeviceError(f"{target}: {command} failed (exit {result.code}): {tail}")
    if not payload.get("ok"):
        raise DeviceError(f"{target}: {command}: {payload.get('error')}")
    payload.pop("ok")
    return payload


def _ship_agent(endpoint: Endpoint, workdir: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".py") as tmp:
        tmp.write(AGENT_SOURCE)
        tmp.flush()
        staged = f"{workdir}/agent/.{AGENT_SHA}.{secrets.token_hex(4)}.tmp"
        endpoint.put(Path(tmp.name), staged)
        endpoint.rename(staged, f"{workdir}/agent/{AGENT_SHA}.py")


def begin(endpoint: Endpoint, candidate: Candidate, lease: Lease, reserve_bytes: int = 0) -> dict[str, Any]:
    """Take the lease; clean stale uploads; ``model``: ``yes`` if the version is already there."""
    return call(endpoint, "begin", *_begin_args(candidate, lease, reserve_bytes))


def _begin_args(candidate: Candidate, lease: Lease, reserve_bytes: int) -> list[str]:
    need = candidate.upload_bytes + reserve_bytes
    return [candidate.sha256, *lease.args(), "--need-bytes", str(need)]


def ship(
    endpoint: Endpoint,
    candidate: Candidate,
    lease: Lease,
    reserve_bytes: int = 0,
    on_upload: Callable[[int, int], None] | None = None,
    on_leased: Callable[[], None] | None = None,
    measure: tuple[Group, int, bool] | None = None,
) -> dict[str, Any]:
    """Take the lease and put the verified version in ``versions/<sha>`` (not active), in one command.

    Returns ``install`` (``present``: nothing moved | ``installed``), ``current``, ``previous``,
    ``workdir``. With ``measure`` (group, blocks, against the active release?), the same command
    then benchmarks the version, unless it is the active one already (``measurement``: what
    ``benchmark`` returns): one command fewer per device. ``on_leased`` is called once the device
    granted the lease (its first answer), so a transfer that fails after it still has its lease
    given back; ``on_upload(sent, total)`` after each chunk of the model sent.
    """
    files = ",".join(f"{name}:{size}" for name, size in candidate.wire.items())
    args = [*_begin_args(candidate, lease, reserve_bytes), "--files", files]
    if measure is not None:
        group, blocks, against_current = measure
        args += ["--measure", *group.agent_args(blocks, group.providers)] + (
            ["--against-current"] if against_current else []
        )

    def feed(first_line: str) -> Iterator[bytes] | None:
        state = first_answer(first_line)
        if state is None:
            return None
        if on_leased is not None:
            on_leased()
        return _chunks(candidate, on_upload) if state.get("model") == "no" else None

    return call(endpoint, "begin", *args, feed=feed)


def first_answer(line: str) -> dict[str, Any] | None:
    """An agent's first line (``begin --files``, ``measure``) when it says go on; None when the agent
    is missing or failed (its final answer then says why), so nothing is sent."""
    try:
        state = json.loads(line)
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) and state.get("ok") else None


def _chunks(candidate: Candidate, on_upload: Callable[[int, int], None] | None) -> Iterator[bytes]:
    """The candidate's files as they go on the wire, in order, in chunks; ``on_upload`` sees
    the model's progress."""
    for name, size in candidate.wire.items():
        sent = 0
        with open(candidate.folder / name, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
                sent += len(chunk)
                if on_upload is not None and name.startswith(MODEL):
                    on_upload(sent, size)


def benchmark(
    endpoint: Endpoint, sha: str, group: Group, baseline: str | None = None, blocks: int = 10
) -> dict[str, Any]:
    """The agent's single-stream benchmark of version ``sha``; with ``baseline`` (another version
    on the device) both are measured interleaved in ``blocks`` A B / B A pairs."""
    argv = [
        f"versions/{sha}/model.onnx",
        f"versions/{sha}/parity.npy",
        *group.agent_args(blocks, group.providers),
    ]
    if baseline:
        argv += ["--baseline", f"versions/{baseline}/model.onnx"]
    return _invoke(endpoint, "bench", argv)


def activate(
    endpoint: Endpoint, sha: str, lease: Lease, keep_versions: int = 0, release: bool = False
) -> dict[str, Any]:
    """Make ``sha`` current, recorded as released on the device; collect old versions."""
    extra = ["--keep-versions", str(keep_versions)] + (["--release"] if release else [])
    return call(endpoint, "activate", sha, *lease.args(), *extra)


def refuse(endpoint: Endpoint, sha: str, lease: Lease, reason: str) -> dict[str, Any]:
    """Record that ``sha`` was refused on this device, and give the lease up."""
    return call(endpoint, "refuse", sha, *lease.args(), "--reason", reason)


def rollback(
    endpoint: Endpoint,
    lease: Lease,
    to: str | None = None,
    force: bool = False,
    allow_empty: bool = False,
    release: bool = False,
) -> dict[str, Any]:
    """Back to the release before the current one (or ``to``, a version released here)."""
    args = [*lease.args(), *(["--to", to] if to else []), *(["--force"] if force else [])]
    args += (["--allow-empty"] if allow_empty else []) + (["--release"] if release else [])
    return call(endpoint, "rollback", *args)


def renew(endpoint: Endpoint, lease: Lease) -> dict[str, Any]:
    return call(endpoint, "renew", *lease.args())


def release(endpoint: Endpoint, lease: Lease) -> dict[str, Any]:
    return call(endpoint, "release", *lease.args())


def facts(endpoint: Endpoint) -> dict[str, Any]:
    """What the device is (architecture, CPUs, memory, disk, Python, onnxruntime, releases).

    Read-only, in one command: the agent's source goes on the command line (``python -c``), so
    nothing is uploaded and a device without a workdir is left without one. (It is ~25 KB; one
    argument may hold 128 KB on Linux.)
    """
    device = endpoint.device
    argv = [python_of(device), "-c", AGENT_SOURCE.decode(), "facts", workdir_of(device)]
    return _answer(endpoint.run(argv), device.target, "facts", device.command_timeout)
