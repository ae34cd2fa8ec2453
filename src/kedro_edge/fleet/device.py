"""What the controller does on ONE device, each step one agent command (one round trip).

A rollout's steps on a device, all under the rollout's lease (``kedro_edge.fleet.lease``):

1. ``begin``: take the lease, remove stale ``.incoming-*`` uploads, say whether the version is
   already there, and refuse if the disk cannot hold it;
2. ``upload`` (only what the device lacks) into ``versions/.incoming-<sha>-<token>/`` over
   SFTP; a failed upload removes its folder;
3. ``install``: the agent checks the sha256 ON the device and renames the folder to
   ``versions/<sha>``;
4. ``benchmark`` against the active release; then ``activate`` (recorded as released; old
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro_edge.bench import agent as agent_module
from kedro_edge.fleet.candidate import FILES, Candidate
from kedro_edge.fleet.inventory import Group
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.ssh import DeviceError, Endpoint, python_of, workdir_of

AGENT_SOURCE = Path(agent_module.__file__).read_bytes()
AGENT_SHA = hashlib.sha256(AGENT_SOURCE).hexdigest()
GRACE = 5.0  # seconds the controller waits beyond the agent's own deadline

# $1 workdir, $2 agent sha256, then the agent's command line.
AGENT = r"""set -e
mkdir -p -- "$1/versions" "$1/agent"
cd -- "$1"
if [ -f "agent/$2.py" ]; then shift 2; exec "$@"; fi
echo agent=missing
echo "workdir=$(pwd -P)"
"""


def call(endpoint: Endpoint, command: str, *args: str) -> dict[str, Any]:
    """``agent.py COMMAND . ARGS`` in the device's workdir: its JSON answer, or a DeviceError."""
    return _invoke(endpoint, command, [".", *args])


def _invoke(endpoint: Endpoint, command: str, args: list[str]) -> dict[str, Any]:
    """Run the agent (shipping it first if the device lacks this version of it).

    The agent ends itself after the device's ``command_timeout`` (``--deadline``), so a command
    the controller gives up on is not left running on the device.
    """
    device = endpoint.device
    limit = device.command_timeout
    tail = [python_of(device), f"agent/{AGENT_SHA}.py", "--deadline", f"{limit:g}", command, *args]
    argv = ["sh", "-c", AGENT, "kedro-edge", workdir_of(device), AGENT_SHA, *tail]
    started = time.monotonic()
    result = endpoint.run(argv, timeout=limit + GRACE)
    if "agent=missing" in result.stdout.splitlines():
        workdir = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)["workdir"]
        _ship_agent(endpoint, workdir)
        started = time.monotonic()
        result = endpoint.run(argv, timeout=limit + GRACE)
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
    need = candidate.upload_bytes + reserve_bytes
    return call(endpoint, "begin", candidate.sha256, *lease.args(), "--need-bytes", str(need))


def upload(
    endpoint: Endpoint,
    candidate: Candidate,
    workdir: str,
    on_upload: Callable[[int, int], None] | None = None,
) -> str:
    """Upload the candidate's files into a fresh staging folder; on any failure, remove it."""
    staging = f"{workdir}/versions/.incoming-{candidate.sha256}-{secrets.token_hex(4)}"
    endpoint.mkdir(staging)
    try:
        for name in FILES:
            callback = on_upload if name == "model.onnx" else None
            endpoint.put(candidate.folder / name, f"{staging}/{name}", callback)
    except BaseException:
        endpoint.remove_tree(staging)  # a full disk must not stay full of our leftovers
        raise
    return staging


def ship(
    endpoint: Endpoint,
    candidate: Candidate,
    lease: Lease,
    reserve_bytes: int = 0,
    on_upload: Callable[[int, int], None] | None = None,
    on_leased: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Take the lease and put the verified version in ``versions/<sha>`` (not active).

    Returns ``install`` (``present``: nothing moved | ``installed``), ``current``, ``previous``,
    ``workdir``. ``on_leased`` is called once the device granted the lease.
    """
    state = begin(endpoint, candidate, lease, reserve_bytes)
    if on_leased is not None:
        on_leased()
    if state["model"] == "yes":
        return {**state, "install": "present"}
    staging = upload(endpoint, candidate, state["workdir"], on_upload)
    done = call(endpoint, "install", candidate.sha256, staging, *lease.args())
    return {**done, "install": done["status"]}


def benchmark(
    endpoint: Endpoint, sha: str, group: Group, baseline: str | None = None, blocks: int = 10
) -> dict[str, Any]:
    """The agent's single-stream benchmark of version ``sha``; with ``baseline`` (another version
    on the device) both are measured interleaved in ``blocks`` A B / B A pairs."""
    argv = [
        f"versions/{sha}/parity.npy", "--providers", ",".join(group.providers),
        "--threads", str(group.threads), "--warmup", str(group.warmup),
        "--min-runs", str(group.min_runs), "--min-seconds", str(group.min_seconds), "--blocks", str(blocks),
    ]  # fmt: skip
    if baseline:
        argv += ["--baseline", f"versions/{baseline}/model.onnx"]
    return _invoke(endpoint, "bench", [f"versions/{sha}/model.onnx", *argv])


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
