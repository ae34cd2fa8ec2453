"""Putting a model on devices: ship by hash, verify on the device, activate atomically; measure.

Per device, one SSH connection and two remote commands install a model:

1. a probe (POSIX sh) makes the workdir and says which of model and agent it already holds;
2. after SFTP uploads into ``versions/.incoming-<sha>-<token>/`` (nothing for what it holds),
   the agent verifies the sha256 ON the device, renames the folder to ``versions/<sha>`` and
   swaps ``current`` (old one kept as ``previous``) by renaming a new symlink over it.

An application reading ``current/model.onnx`` never sees a half-written file, and a transfer
killed half-way leaves only an ``.incoming-*`` folder that the next install removes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kedro_edge.bench import agent as agent_module
from kedro_edge.fleet.inventory import Device, Group
from kedro_edge.fleet.ssh import DeviceError, Endpoint, python_of, workdir_of
from kedro_edge.progress import progress_bar

AGENT_SOURCE = Path(agent_module.__file__).read_bytes()
AGENT_SHA = hashlib.sha256(AGENT_SOURCE).hexdigest()

# $1 workdir, $2 model sha256, $3 agent sha256: arguments, never pasted into the script.
PROBE = r"""set -e
mkdir -p -- "$1/versions" "$1/agent"
cd -- "$1"
if [ -f "versions/$2/model.onnx" ]; then echo model=yes; else echo model=no; fi
if [ -f "agent/$3.py" ]; then echo agent=yes; else echo agent=no; fi
echo "workdir=$(pwd -P)"
"""


@dataclass
class Release:
    """A model ready to ship: its bytes on disk beside a manifest and the parity batch."""

    folder: Path  # model.onnx, manifest.json, parity.npy
    sha256: str
    size_bytes: int

    @classmethod
    def prepare(cls, model: bytes, manifest: dict[str, Any], parity: np.ndarray, folder: Path) -> Release:
        sha = hashlib.sha256(model).hexdigest()
        (folder / "model.onnx").write_bytes(model)
        (folder / "manifest.json").write_text(
            json.dumps({**manifest, "sha256": sha, "size_bytes": len(model)}, indent=2)
        )
        with open(folder / "parity.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(parity, dtype=np.float32), allow_pickle=False)
        return cls(folder, sha, len(model))


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kedro-edge-release-")


def _agent_json(result, device: Device, what: str) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    try:
        payload = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"{device.target}: {what} failed (exit {result.code}): {tail}")
    if not payload.get("ok"):
        raise DeviceError(f"{device.target}: {what} failed: {payload.get('error')}")
    return payload


def probe(endpoint: Endpoint, sha: str) -> dict[str, str]:
    """Make the workdir; say whether the model ``sha`` and our agent are there, and where it is."""
    device = endpoint.device
    r = endpoint.run(["sh", "-c", PROBE, "kedro-edge-probe", workdir_of(device), sha, AGENT_SHA])
    if r.code != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"{device.target}: cannot prepare workdir {device.workdir!r}: {tail}")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def _ship_agent(endpoint: Endpoint, workdir: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".py") as tmp:
        tmp.write(AGENT_SOURCE)
        tmp.flush()
        staged = f"{workdir}/agent/.{AGENT_SHA}.{secrets.token_hex(4)}.tmp"
        endpoint.put(Path(tmp.name), staged)
        endpoint.rename(staged, f"{workdir}/agent/{AGENT_SHA}.py")


def agent_path(workdir: str) -> str:
    return f"{workdir}/agent/{AGENT_SHA}.py"


def ensure_agent(endpoint: Endpoint, sha: str = "-") -> dict[str, str]:
    """Probe, and ship the agent if the device lacks this version of it."""
    state = probe(endpoint, sha)
    if state.get("agent") != "yes":
        _ship_agent(endpoint, state["workdir"])
    return state


def install(
    endpoint: Endpoint,
    release: Release,
    activate: bool = True,
    lock_timeout: float = 60.0,
    on_upload: Callable[[int, int], None] | None = None,
    lease: str | None = None,
) -> dict[str, Any]:
    """Ship ``release`` to the device (only what it lacks), verify there, and activate it."""
    device = endpoint.device
    state = ensure_agent(endpoint, release.sha256)
    workdir = state["workdir"]
    staging = "-"
    if state.get("model") != "yes":
        staging = f"{workdir}/versions/.incoming-{release.sha256}-{secrets.token_hex(4)}"
        endpoint.mkdir(staging)
        for name in ("manifest.json", "parity.npy", "model.onnx"):  # the big one last
            endpoint.put(
                release.folder / name, f"{staging}/{name}", on_upload if name == "model.onnx" else None
            )
    argv = [python_of(device), agent_path(workdir), "install", workdir, release.sha256, staging]
    argv += ["--lock-timeout", str(lock_timeout)] + (["--activate"] if activate else [])
    argv += ["--lease", lease] if lease else []
    result = _agent_json(endpoint.run(argv), device, "install")
    return {
        "install": result["status"],
        "current": result["current"],
        "previous": result["previous"],
        "workdir": workdir,
    }


def benchmark(
    endpoint: Endpoint, sha: str, workdir: str, group: Group, baseline: str | None = None, blocks: int = 10
) -> dict[str, Any]:
    """The agent's single-stream benchmark of version ``sha``; with ``baseline`` (another version
    on the device) both are measured interleaved in ``blocks`` A B blocks."""
    device = endpoint.device
    version = f"{workdir}/versions/{sha}"
    argv = [
        python_of(device), agent_path(workdir), "bench", f"{version}/model.onnx", f"{version}/parity.npy",
        "--providers", ",".join(group.providers), "--threads", str(group.threads),
        "--warmup", str(group.warmup), "--min-runs", str(group.min_runs),
        "--min-seconds", str(group.min_seconds), "--blocks", str(blocks),
    ]  # fmt: skip
    if baseline:
        argv += ["--baseline", f"{workdir}/versions/{baseline}/model.onnx"]
    return _agent_json(endpoint.run(argv), device, "benchmark")


def switch(
    endpoint: Endpoint,
    workdir: str,
    command: str,
    *args: str,
    lease: str | None = None,
    lock_timeout: float = 60.0,
) -> dict[str, Any]:
    """``activate SHA`` / ``rollback [--to SHA]`` / ``release`` on the device, under the rollout lease."""
    argv = [python_of(endpoint.device), agent_path(workdir), command, workdir, *args]
    argv += ["--lock-timeout", str(lock_timeout)] + (["--lease", lease] if lease else [])
    result = _agent_json(endpoint.run(argv), endpoint.device, command)
    result.pop("ok", None)
    return result


def facts(endpoint: Endpoint) -> dict[str, Any]:
    """What the device is (architecture, CPUs, memory, disk, Python, onnxruntime, active versions).

    Read-only, in one command: the agent's source goes on the command line (``python -c``), so
    nothing is uploaded and a device without a workdir is left without one. (It is ~17 KB; one
    argument may hold 128 KB on Linux.)
    """
    device = endpoint.device
    argv = [python_of(device), "-c", AGENT_SOURCE.decode(), "facts", workdir_of(device)]
    result = _agent_json(endpoint.run(argv), device, "facts")
    result.pop("ok", None)
    return result


@dataclass
class Outcome:
    device: str
    status: str  # "ok" | "failed"
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def for_each(
    devices: list[Device],
    work: Callable[[Device], dict[str, Any]],
    max_parallel: int,
    description: str,
) -> list[Outcome]:
    """Run ``work`` per device, at most ``max_parallel`` at once; every device gets an outcome.

    A failure (an exception) is that device's outcome, never the others': each device's own
    connect and command timeouts bound how long it can hold a worker.
    """
    outcomes: dict[str, Outcome] = {}
    with progress_bar() as bar, ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        task = bar.add_task(description, total=len(devices), status="")
        futures = {pool.submit(work, d): d for d in devices}
        for future in as_completed(futures):
            device = futures[future]
            try:
                outcomes[device.name] = Outcome(device.name, "ok", data=future.result())
            except Exception as exc:  # noqa: BLE001 - one device's failure is its outcome
                message = (
                    str(exc)
                    if isinstance(exc, DeviceError)
                    else f"{device.target}: {type(exc).__name__}: {exc}"
                )
                outcomes[device.name] = Outcome(device.name, "failed", error=message)
            failed = sum(o.status == "failed" for o in outcomes.values())
            bar.update(task, advance=1, status=f"{failed} failed" if failed else "")
    return [outcomes[d.name] for d in devices]
