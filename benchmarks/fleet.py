"""Benchmark: shipping a model to a fleet at equal parallelism: the project, Fabric in a pool, Ansible.

What: on one loopback fleet of real OpenSSH servers (``kedro_edge.testing.start_fleet``: one
``sshd`` per device on 127.0.0.x), a fresh version of the same model (one more ONNX metadata
entry: a new sha256, so a real transfer) goes to 8 and 32 devices, 16 at a time, three ways that
do comparable work per device (upload, checksum checked on the device, into place, run once):

- ``project``: ``kedro_edge.fleet.rollout.staged_rollout`` as a release runs it, one wave
  ``["100%"]``, ``max_parallel`` and ``max_parallel_benchmarks`` 16 (so each device is measured
  in the command that installs it). To compare the shipping machinery, the on-device step is cut
  to the least the rollout allows: the regression gate OFF (``RegressionParams(enabled=False,
  blocks=3)``: no baseline is measured) and the group's benchmark at warmup 0, min_runs 1,
  min_seconds 0. Per device: ``begin`` (lease, disk check; model + manifest + parity streamed
  on the same exec channel, sha256 checked on the device, renamed into place; then one session
  load, a single-stream run, parity outputs and device facts: 1 command), ``activate`` (1
  command). One SSH connection per device, every command a channel on it, no SFTP.
- ``fabric-pool``: plain Fabric, one ``Connection`` per device in a ``ThreadPoolExecutor(16)``,
  host keys checked as strictly as the project (the fleet's known_hosts, ``RejectPolicy``):
  ``mkdir -p``, ``put`` to a temporary name, ``sha256sum`` (compared), ``mv``, then one
  ``python3 -c`` loading the model into an onnxruntime session (the closest one-command peer
  of the project's benchmark; it does less on the device: 1 session load, no activation).
- ``ansible``: ``ansible-playbook -f 16`` (ansible-core; ssh with ``StrictHostKeyChecking=yes``
  against the same known_hosts; its default ``ControlMaster=auto ControlPersist=60s -C``, a
  fresh ControlPath folder each run so no run inherits warm connections; pipelining ON, the usual
  tuning: 8 instead of 23 ssh execs per device, 8.6 s instead of 14.1 s on 4 devices in a
  trial): ``file`` (the folder), ``copy`` to a temporary name with ``checksum:`` (sha1, checked
  on the device), ``command: mv``, ``command: python3 -c ...`` (the same load as Fabric's).

How: each tool is measured 3 times per size, interleaved (project, Fabric, Ansible, project, ...),
and the median is reported with its min-max. Wall time; controller CPU per device: the project and
Fabric run in this process (``time.process_time``, every thread, the progress display included);
Ansible's is the user+sys of its whole process tree from ``RUSAGE_CHILDREN``: ansible-playbook,
its forks, every ssh/sftp client and the ssh ControlMaster processes (this process is made a child
subreaper so the detached masters are reaped, and counted, here). The sshd, shells, agents and
onnxruntime on the devices are other processes, in no tool's controller figure; their CPU is the
"device CPU" column (each device's sshd listener with every process it reaped, from
``/proc/<pid>/stat``: 10 ms ticks), which explains most wall-time differences on loopback. The
project's wall per rollout step (install and measure, activate) is in the JSON (``phases_s``, from
a timing wrapper this benchmark puts around ``rollout.for_each``). SSH connections per device:
counted the same way for all three, from each sshd's log ("Accepted publickey"). Remote commands
and SFTP requests: the project's from its rollout record and a counting wrapper on paramiko's
``SFTPClient`` (synchronous requests; pipelined writes are not round trips of their own), Fabric's
the same wrapper; Ansible's from one untimed ``-vvv`` run (ssh execs over the ControlMaster and
sftp sessions, each put estimated at 3 requests: realpath, open, close). Round trips per device
(an estimate, "~" for Ansible): connections x 5 (TCP, key exchange, auth) + commands x 2 (channel
open, exec/exit) + SFTP sessions x 3 + SFTP requests + streamed uploads (the project's stream
waits for the agent's first line, "model: no", before sending: 1 round trip each). Bytes sent per
device: model bytes moved (the project: model + manifest + parity on its exec channel; the others:
the model, over SFTP). Then an unchanged re-deploy with
the project at each size (decision "already active", 0 bytes). First contact (the agent shipped
to every device) and one warm-up run of Fabric and Ansible are outside the figures.

The devices are processes on THIS machine: they share its cores (the title says how many; other
work may share them too) with the controller: wall times compare the tools on loopback, not over a
real network.

Targets (issue 9): the project faster than both peers at equal parallelism; its controller CPU
<= 15 ms per device; an unchanged re-deploy moves 0 bytes. Writes ``benchmarks/results/fleet.json``
and ``fleet.png``; exits 0 whether or not the targets pass. Needs ``/usr/sbin/sshd`` (openssh-server)
and ``ansible-playbook`` (``pip install -e ".[bench]"``; without it the Ansible rows are skipped).
From the project root:

    .venv/bin/python benchmarks/fleet.py [--quick]   # --quick: 4 devices, 1 repetition
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import paramiko
import yaml
from fabric import Connection
from rich.console import Console
from rich.table import Table

from kedro_edge.config import DeploymentParams, RegressionParams
from kedro_edge.fleet import rollout as rollout_module
from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.inventory import Device, Fleet, parse_fleet
from kedro_edge.fleet.rollout import staged_rollout
from kedro_edge.runtimes.onnxruntime import ort_predict, session
from kedro_edge.testing import start_fleet

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "06_models" / "model.onnx"
SEED, PARITY_SAMPLES = 0, 8
SIZES, QUICK_SIZES = (8, 32), (4,)
REPEATS, QUICK_REPEATS = 3, 1
PARALLEL = 16
CHEAP_BENCH = {"threads": 1, "warmup": 0, "min_runs": 1, "min_seconds": 0.0}
CFG = DeploymentParams(
    waves=["100%"], max_parallel=PARALLEL, max_parallel_benchmarks=PARALLEL, lock_timeout=30,
    regression=RegressionParams(enabled=False, blocks=3), parity_samples=PARITY_SAMPLES,
)  # fmt: skip
HANDSHAKE_RTTS, COMMAND_RTTS, SFTP_SESSION_RTTS = 5, 2, 3
ANSIBLE_SFTP_REQUESTS_PER_PUT = 3  # realpath, open, close (writes pipelined): an estimate
MAX_CPU_MS = 15.0
LOAD = "import onnxruntime as o, sys; o.InferenceSession(sys.argv[1]); print('ok')"
PROJECT, FABRIC, ANSIBLE, REDEPLOY = "project", "fabric-pool", "ansible", "project, unchanged"

console = Console(width=None if sys.stdout.isatty() else 200)
SFTP: Counter[str] = Counter()
_SFTP_LOCK = threading.Lock()
Row = dict[str, Any]


def count_sftp() -> None:
    """Count SFTP sessions and synchronous SFTP requests (one round trip each) of this process."""
    for name, key in (("__init__", "sessions"), ("_request", "requests")):
        original = getattr(paramiko.SFTPClient, name)

        def counted(*args: Any, _original: Callable = original, _key: str = key, **kwargs: Any) -> Any:
            with _SFTP_LOCK:
                SFTP[_key] += 1
            return _original(*args, **kwargs)

        setattr(paramiko.SFTPClient, name, counted)


@contextmanager
def phase(name: str) -> Iterator[None]:
    console.print(f"[bold cyan]>[/] {name} ...")
    start = time.perf_counter()
    yield
    console.print(f"[green]  done[/] {name} in {time.perf_counter() - start:.1f} s")


# --- the model ---------------------------------------------------------------------------------


@dataclass
class Model:
    """The model to ship, its parity batch and host outputs; ``fresh()`` makes new versions."""

    proto: onnx.ModelProto
    parity: np.ndarray
    reference: np.ndarray
    source: str
    folder: Path
    made: int = 0

    def fresh(self) -> Candidate:
        """The same graph with one more metadata entry: a new sha256, so a real transfer."""
        self.made += 1
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        proto.metadata_props.add(key="kedro_edge_benchmark_version", value=str(self.made))
        (folder := self.folder / f"v{self.made}").mkdir(parents=True)
        manifest = {"benchmark": "fleet", "version": self.made, "source": self.source}
        return Candidate.prepare(proto.SerializeToString(), manifest, self.parity, folder)


def load_model(folder: Path) -> Model:
    """``data/06_models/model.onnx`` if the pipeline made one, else an untrained ResidualCNN."""
    if MODEL.exists():
        proto, source = onnx.load(str(MODEL)), str(MODEL.relative_to(ROOT))
    else:
        import torch

        from kedro_edge.models import ResidualCNN
        from kedro_edge.runtimes.onnx_export import to_onnx

        torch.manual_seed(SEED)
        proto, source = to_onnx(ResidualCNN(), (1, 1, 32, 32)), "ResidualCNN() (untrained), 1x1x32x32"
    dims = [d.dim_value or PARITY_SAMPLES for d in proto.graph.input[0].type.tensor_type.shape.dim]
    parity = np.random.default_rng(SEED).random(dims, dtype=np.float32)
    return Model(proto, parity, ort_predict(session(proto), parity), source, folder)


# --- three ways to ship it ---------------------------------------------------------------------

PHASES: list[tuple[str, float]] = []  # the project's last rollout: (step, wall seconds)
_for_each = rollout_module.for_each


def _timed_for_each(devices: list[Device], work: Callable, parallel: int, what: str) -> list:
    """``rollout.for_each``, timed: where the project's wall goes (install and measure, activate)."""
    start = time.perf_counter()
    try:
        return _for_each(devices, work, parallel, what)
    finally:
        if devices:
            PHASES.append((what.removeprefix("wave 1: "), time.perf_counter() - start))


rollout_module.for_each = _timed_for_each  # the benchmark's own wrapper; the rollout is unchanged


def project(registry: Fleet, devices: list[Device], cand: Candidate, ref: np.ndarray) -> Row:
    """The staged rollout a release runs (one wave, 16 at a time)."""
    PHASES.clear()
    record = staged_rollout(registry, cand, ref, CFG, devices).to_json()
    bad = [e for e in record["devices"] if e["decision"] not in ("activated", "already active")]
    for e in bad:
        console.print(f"[red]  failed[/] {e['device']}: {e.get('reason')}")
    return {
        "commands": sum(e.get("remote_commands", 0) for e in record["devices"]),
        "bytes_sent": sum(e.get("bytes_sent", 0) for e in record["devices"]),
        "streams": sum(e.get("install") == "installed" for e in record["devices"]),
        "decisions": dict(Counter(e["decision"] for e in record["devices"])),
        "verdict": record["verdict"],
        "phases_s": dict(PHASES),
        "failed": len(bad),
    }


FABRIC_COMMANDS = 4  # mkdir -p, sha256sum, mv, python3 (the put is SFTP: counted with the SFTP requests)


def fabric_device(device: Device, known_hosts: str, cand: Candidate) -> None:
    """Plain Fabric, one device: put to a temporary name, sha256sum, mv, load the model."""
    kwargs = {"key_filename": device.key_filename, "look_for_keys": False}
    conn = Connection(
        device.host, user=device.user, port=device.port, connect_timeout=10, connect_kwargs=kwargs
    )
    conn.client.load_host_keys(known_hosts)  # Fabric alone accepts any host key: be as strict as the project
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    folder, q = f"{device.workdir}/fabric", shlex.quote
    tmp, final = f"{folder}/.{cand.sha256}.tmp", f"{folder}/{cand.sha256}.onnx"
    try:
        conn.run(f"mkdir -p {q(folder)}", hide=True, in_stream=False)
        conn.put(str(cand.folder / "model.onnx"), tmp)
        digest = conn.run(f"sha256sum {q(tmp)}", hide=True, in_stream=False).stdout
        if digest.split()[0] != cand.sha256:
            raise RuntimeError("sha256 mismatch after upload")
        conn.run(f"mv {q(tmp)} {q(final)}", hide=True, in_stream=False)
        conn.run(f"{q(device.python or 'python3')} -c {q(LOAD)} {q(final)}", hide=True, in_stream=False)
    finally:
        conn.close()


def fabric_pool(devices: list[Device], known_hosts: str, cand: Candidate) -> Row:
    failed = 0
    with ThreadPoolExecutor(PARALLEL) as pool:
        for device, future in [(d, pool.submit(fabric_device, d, known_hosts, cand)) for d in devices]:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - counted and shown
                failed += 1
                console.print(f"[red]  failed[/] {device.name}: {type(exc).__name__}: {exc}")
    n = len(devices)
    return {"commands": FABRIC_COMMANDS * n, "bytes_sent": cand.size_bytes * (n - failed), "failed": failed}


PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - file: {path: "{{ workdir }}/ansible", state: directory}
    - copy: {src: "{{ model }}", dest: "{{ workdir }}/ansible/.{{ sha }}.tmp", checksum: "{{ sha1 }}"}
    - command:
        argv: [mv, "{{ workdir }}/ansible/.{{ sha }}.tmp", "{{ workdir }}/ansible/{{ sha }}.onnx"]
    - command:
        argv: ["{{ ansible_python_interpreter }}", -c, "{{ load }}", "{{ workdir }}/ansible/{{ sha }}.onnx"]
"""
ANSIBLE_SETTINGS = {  # environment for every ansible-playbook run (paths added per run)
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "LC_ALL": "C.UTF-8",
}


class AnsibleRunner:
    """``ansible-playbook -f 16`` on the loopback devices; each run with fresh ssh ControlMasters."""

    def __init__(self, devices: list[Device], known_hosts: str, work: Path) -> None:
        self.work, self.runs = work, 0
        self.playbook, self.inventory = work / "ship.yml", work / "inventory.yml"
        self.playbook.write_text(PLAYBOOK)
        hosts = {
            d.name: {
                "ansible_host": d.host, "ansible_port": d.port, "ansible_user": d.user,
                "ansible_ssh_private_key_file": d.key_filename,
                "ansible_python_interpreter": d.python or "python3", "workdir": d.workdir,
                "ansible_remote_tmp": f"{d.workdir}/.ansible-tmp",
            }
            for d in devices
        }  # fmt: skip
        common = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
        doc = {"all": {"hosts": hosts, "vars": {"ansible_ssh_common_args": common}}}
        self.inventory.write_text(yaml.safe_dump(doc))
        self.executable = str(Path(sys.executable).parent / "ansible-playbook")
        self.subreaper = _become_subreaper()

    def __call__(self, devices: list[Device], cand: Candidate, verbose: bool = False) -> Row:
        self.runs += 1
        run = self.work / f"run{self.runs}"
        (control := run / "cp").mkdir(parents=True)
        env = {**os.environ, **ANSIBLE_SETTINGS, "ANSIBLE_HOME": str(self.work / "home"),
               "ANSIBLE_LOCAL_TEMP": str(run / "tmp"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control)}  # fmt: skip
        model = cand.folder / "model.onnx"
        extra = {"model": str(model), "sha": cand.sha256, "load": LOAD,
                 "sha1": hashlib.sha1(model.read_bytes()).hexdigest()}  # fmt: skip
        argv = [self.executable, "-i", str(self.inventory), "-f", str(PARALLEL), str(self.playbook),
                "--limit", ",".join(d.name for d in devices), "-e", json.dumps(extra)]  # fmt: skip
        done = subprocess.run(argv + ["-vvv"] * verbose, capture_output=True, text=True, env=env, check=False)
        self.stop_masters(control)
        recap = dict(re.findall(r"^(\S+)\s+:\s+ok=\d+.*?failed=(\d+)", done.stdout, re.M))
        unreachable = dict(re.findall(r"^(\S+)\s+:\s+ok=.*?unreachable=(\d+)", done.stdout, re.M))
        failed = sum(1 for d in devices if recap.get(d.name, "1") != "0" or unreachable.get(d.name) != "0")
        if done.returncode != 0 or failed:
            console.print(f"[red]  ansible exited {done.returncode}[/]: {(done.stdout + done.stderr)[-800:]}")
        n = len(devices)
        row: Row = {"commands": None, "bytes_sent": cand.size_bytes * (n - failed), "failed": failed}
        if verbose:  # what it did per device: ssh execs over the ControlMaster, sftp sessions
            row["execs"] = len(re.findall(r"^<[\d.]+> SSH: EXEC ssh ", done.stdout, re.M))
            row["sftp_sessions"] = len(re.findall(r"^<[\d.]+> SSH: EXEC sftp ", done.stdout, re.M))
        return row

    def stop_masters(self, control: Path) -> None:
        """End this run's ssh ControlMasters (ControlPersist would keep them 60 s) and reap them."""
        if self.subreaper:
            masters = [pid for pid in _children() if str(control).encode() in _cmdline(pid)]
            for pid in masters:
                os.kill(pid, signal.SIGTERM)
            for pid in masters:
                os.waitpid(pid, 0)  # their CPU now counts in RUSAGE_CHILDREN
            return
        for sock in control.iterdir():  # not ours to reap: ask them to exit (their CPU is not counted)
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"], capture_output=True)


def _become_subreaper() -> bool:
    """Linux: orphaned descendants (ssh's detached ControlMasters) become our children."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _children() -> list[int]:
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == me:
                kids.append(int(entry))
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# --- measuring ---------------------------------------------------------------------------------


def device_cpu(loopback: Any, devices: list[Device]) -> float:
    """CPU seconds the devices' sshd used so far, with every process they reaped: connections,
    shells, agents, ansible modules, onnxruntime (``/proc/<listener>/stat``: utime..cstime)."""
    total = 0
    for d in devices:
        pid = loopback.device(d.name)["pid"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def settled_device_cpu(loopback: Any, devices: list[Device], limit: float = 5.0) -> float:
    """``device_cpu`` once the devices' sshd have reaped the sessions that ended (unchanged 0.3 s)."""
    deadline, last = time.monotonic() + limit, device_cpu(loopback, devices)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = device_cpu(loopback, devices)
        if now == last:
            return now
        last = now
    return last


def accepted(loopback: Any, devices: list[Device]) -> int:
    """SSH connections the devices' sshd accepted so far (their logs, "Accepted publickey")."""
    return sum(
        loopback.device(d.name)["log_file"].read_text(errors="replace").count("Accepted publickey")
        for d in devices
    )


def measure(tool: str, loopback: Any, devices: list[Device], ship: Callable[[Candidate], Row],
            cand: Candidate, ansible_counts: Row | None = None) -> Row:  # fmt: skip
    """One ship of ``cand`` (prepared beforehand) over ``devices``: wall, controller CPU, costs."""
    n, sftp_before, conns = len(devices), Counter(SFTP), accepted(loopback, devices)
    on_devices = settled_device_cpu(loopback, devices)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, start = time.process_time(), time.perf_counter()
    counts = ship(cand)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # after the masters were reaped
    if tool == ANSIBLE:  # ansible-playbook, its forks, ssh/sftp clients and masters
        cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    sftp, connections = SFTP - sftp_before, (accepted(loopback, devices) - conns) / n
    on_devices = settled_device_cpu(loopback, devices) - on_devices  # outside the timing
    if tool == ANSIBLE:
        ac = ansible_counts or {}
        commands = ac.get("execs_per_device")
        sessions = ac.get("sftp_sessions_per_device")
        requests = None if sessions is None else sessions * ANSIBLE_SFTP_REQUESTS_PER_PUT
    else:
        commands, sessions, requests = counts["commands"] / n, sftp["sessions"] / n, sftp["requests"] / n
    rtts = (
        None
        if commands is None or sessions is None
        else connections * HANDSHAKE_RTTS
        + commands * COMMAND_RTTS
        + sessions * SFTP_SESSION_RTTS
        + requests
        + counts.get("streams", 0) / n
    )
    phases = counts.get("phases_s")
    console.print(
        f"    {tool:<20} N={n:<3} wall {wall:6.2f} s  CPU {1000 * cpu / n:6.1f} ms/device, "
        f"on the devices {1000 * on_devices / n:6.1f} ms/device"
        + (f"  {counts['decisions']}" if "decisions" in counts else "")
        + ("  " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) if phases else "")
    )
    return {
        "tool": tool, "devices": n, "wall_s": wall, "cpu_ms_per_device": 1000 * cpu / n,
        "device_cpu_ms_per_device": 1000 * on_devices / n,
        "ssh_connections_per_device": connections, "remote_commands_per_device": commands,
        "sftp_sessions_per_device": sessions, "sftp_requests_per_device": requests,
        "round_trips_per_device": rtts, "bytes_sent_per_device": counts["bytes_sent"] / n,
        "estimated": tool == ANSIBLE, "failed": counts["failed"],
        **({"decisions": counts["decisions"]} if "decisions" in counts else {}),
        **({"phases_s": phases} if phases else {}),
    }  # fmt: skip


def median_row(rows: list[Row]) -> Row:
    """The median of repeated measurements, with each figure's min and max."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in rows]
            out[key] = statistics.median(values)
            out[f"{key}_range"] = [min(values), max(values)]
    out["repeats"] = len(rows)
    out["failed"] = sum(r["failed"] for r in rows)
    keep = ("wall_s", "cpu_ms_per_device", "device_cpu_ms_per_device", "phases_s")
    out["runs"] = [{k: r[k] for k in keep if k in r} for r in rows]
    if "phases_s" in rows[0]:
        out["phases_s"] = {
            k: statistics.median(r["phases_s"].get(k, 0.0) for r in rows) for k in rows[0]["phases_s"]
        }
    return out


def run_all(loopback: Any, model: Model, sizes: tuple[int, ...], repeats: int, work: Path) -> Row:
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    raw["groups"]["loopback"].update(CHEAP_BENCH)
    registry = parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))
    names, known_hosts = [d.name for d in registry.devices], str(loopback.known_hosts)
    have_ansible = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is not None
    runner = AnsibleRunner(registry.devices, known_hosts, work) if have_ansible else None
    with phase(f"first contact: agent + model to all {len(names)} devices (outside the figures)"):
        project(registry, registry.devices, model.fresh(), model.reference)
    ansible_counts: Row = {}
    with phase(f"warm-up: Fabric{' and Ansible (-vvv: counts its execs and sftp puts)' * bool(runner)}"):
        first = registry.select(names[: sizes[0]])
        fabric_pool(first, known_hosts, model.fresh())
        if runner is not None:
            seen = runner(first, model.fresh(), verbose=True)
            ansible_counts = {
                "execs_per_device": seen["execs"] / len(first),
                "sftp_sessions_per_device": seen["sftp_sessions"] / len(first),
                "counted_on_devices": len(first),
            }
            console.print(f"    ansible per device: {ansible_counts}")
    rows: list[Row] = []
    for n in sizes:
        devices = registry.select(names[:n])
        tools: dict[str, Callable[[Candidate], Row]] = {
            PROJECT: lambda c, d=devices: project(registry, d, c, model.reference),
            FABRIC: lambda c, d=devices: fabric_pool(d, known_hosts, c),
        }
        if runner is not None:
            tools[ANSIBLE] = lambda c, d=devices: runner(d, c)
        reps: dict[str, list[Row]] = {tool: [] for tool in tools}
        with phase(f"a fresh version to {n} devices, {repeats}x, interleaved: {', '.join(tools)}"):
            for _ in range(repeats):
                for tool, ship in tools.items():
                    reps[tool].append(measure(tool, loopback, devices, ship, model.fresh(), ansible_counts))
        rows += [median_row(r) for r in reps.values()]
        with phase(f"re-deploy the model active on {n} devices with the project, {repeats}x"):
            cand = model.fresh()
            project(registry, devices, cand, model.reference)  # now active everywhere
            rows.append(
                median_row(
                    [measure(REDEPLOY, loopback, devices, tools[PROJECT], cand) for _ in range(repeats)]
                )
            )
    return {"rows": rows, "ansible": have_ansible, "ansible_counts": ansible_counts,
            "ansible_masters_reaped": bool(runner and runner.subreaper)}  # fmt: skip


# --- report ------------------------------------------------------------------------------------


def evaluate_targets(rows: list[Row]) -> dict[str, Row]:
    out: dict[str, Row] = {}
    by = {(r["tool"], r["devices"]): r for r in rows}
    for (tool, n), row in by.items():
        if tool == REDEPLOY:
            out[f"redeploy_zero_bytes_at_{n}"] = {
                "description": f"an unchanged re-deploy to {n} devices moves 0 bytes (median; max "
                f"{row['bytes_sent_per_device_range'][1]:g})",
                "measured": row["bytes_sent_per_device_range"][1], "threshold": 0,
                "passed": row["bytes_sent_per_device_range"][1] == 0 and not row["failed"],
            }  # fmt: skip
        if tool != PROJECT:
            continue
        for peer in (FABRIC, ANSIBLE):
            if (peer, n) in by:
                ratio = by[(peer, n)]["wall_s"] / row["wall_s"]
                out[f"faster_than_{peer}_at_{n}"] = {
                    "description": f"project faster than {peer} at {n} devices, both {PARALLEL} at a time "
                    f"(median wall, peer/project)",
                    "measured": ratio, "threshold": 1.0, "passed": ratio > 1.0,
                }  # fmt: skip
        out[f"cpu_at_{n}"] = {
            "description": f"project controller CPU <= {MAX_CPU_MS:g} ms per device at {n} devices (median)",
            "measured": row["cpu_ms_per_device"], "threshold": MAX_CPU_MS,
            "passed": row["cpu_ms_per_device"] <= MAX_CPU_MS,
        }  # fmt: skip
    return out


COLUMNS = (  # header, key, format
    ("tool", "tool", "{}"), ("N", "devices", "{}"), ("wall s (min-max)", "wall_s", "{:.2f}"),
    ("CPU ms/dev (min-max)", "cpu_ms_per_device", "{:.1f}"),
    ("device CPU ms/dev", "device_cpu_ms_per_device", "{:.0f}"),
    ("SSH conn/dev", "ssh_connections_per_device", "{:g}"),
    ("commands/dev", "remote_commands_per_device", "{:g}"),
    ("SFTP sess/dev", "sftp_sessions_per_device", "{:g}"),
    ("SFTP req/dev", "sftp_requests_per_device", "{:g}"),
    ("round trips/dev", "round_trips_per_device", "{:.0f}"),
    ("bytes sent/dev", "bytes_sent_per_device", "{:,.0f}"),
    ("failed", "failed", "{}"),
)  # fmt: skip
ESTIMATED = {"remote_commands_per_device", "sftp_requests_per_device", "round_trips_per_device"}


def cell(row: Row, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "n/a"
    text = fmt.format(value)
    if key in ("wall_s", "cpu_ms_per_device") and f"{key}_range" in row and row["repeats"] > 1:
        lo, hi = row[f"{key}_range"]
        text += f" ({fmt.format(lo)}-{fmt.format(hi)})"
    if row.get("estimated") and key in ESTIMATED:
        text = "~" + text
    return text


def results_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title, caption="~: Ansible's counts from one -vvv run, its SFTP requests estimated")
    for i, (header, _, _) in enumerate(COLUMNS):
        table.add_column(header, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(cell(r, key, fmt) for _, key, fmt in COLUMNS))
    return table


def print_targets(targets: dict[str, Row]) -> None:
    console.print("[bold]Targets:")
    for name, t in targets.items():
        mark = "[green]PASS[/]" if t["passed"] else "[red]FAIL[/]"
        console.print(f"  {mark}  {name}: {t['description']} - measured {t['measured']:.3g}")
    console.print(f"[bold]{sum(t['passed'] for t in targets.values())}/{len(targets)} targets passed.")


def save_plot(rows: list[Row], cores: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    sizes = sorted({r["devices"] for r in rows})
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        mine = {r["devices"]: r for r in rows if r["tool"] == tool}
        x = np.arange(len(sizes)) + i * width
        for ax, key in zip(axes, ("wall_s", "cpu_ms_per_device"), strict=True):
            values = [mine[n][key] if n in mine else np.nan for n in sizes]
            lo = [mine[n][key] - mine[n][f"{key}_range"][0] if n in mine else 0 for n in sizes]
            hi = [mine[n][f"{key}_range"][1] - mine[n][key] if n in mine else 0 for n in sizes]
            bars = ax.bar(x, values, width, yerr=[lo, hi], capsize=3, label=tool)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axes[1].axhline(MAX_CPU_MS, color="grey", ls="--", lw=1, label=f"target {MAX_CPU_MS:g} ms")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.FixedLocator([5, 10, 15, 20, 50, 100, 200, 500, 1000]))
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    titles = (
        f"wall time, {PARALLEL} at a time (median, min-max)\n"
        f"loopback devices share the controller's {cores} cores",
        "controller CPU per device (log scale)\nAnsible: its process tree incl. ssh clients and masters",
    )
    for ax, ylabel, title in zip(axes, ("wall time (s)", "CPU (ms/device)"), titles, strict=True):
        ax.set_xticks(np.arange(len(sizes)) + width * (len(tools) - 1) / 2, [f"{n} devices" for n in sizes])
        ax.set(ylabel=ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> Row:
    versions = {}
    for p in ("paramiko", "fabric", "ansible-core", "onnxruntime", "kedro-edge"):
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "openssh": ssh,
        "versions": versions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 devices, 1 repetition")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    sizes, repeats = (QUICK_SIZES, QUICK_REPEATS) if args.quick else (SIZES, REPEATS)
    info = machine()
    cores = info["cpus_usable"]
    count_sftp()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kedro-edge-fleet-bench-") as tmp:
        model = load_model(Path(tmp) / "releases")
        (work := Path(tmp) / "ansible").mkdir()
        with phase(f"start {max(sizes)} loopback sshd"):
            loopback = start_fleet(Path(tmp) / "fleet", max(sizes), port=0)
        with loopback:
            results = run_all(loopback, model, sizes, repeats, work)
    rows, targets = results["rows"], evaluate_targets(results["rows"])
    console.print(
        results_table(
            rows,
            f"Shipping {model.source} ({model.proto.ByteSize():,} B) to loopback SSH devices, {PARALLEL} at "
            f"a time; median of {repeats}. The devices (sshd, agents, onnxruntime) share the controller's "
            f"{cores} cores",
        )
    )
    if not results["ansible"]:
        console.print("[yellow]ansible-playbook not found: pip install -e '.[bench]'")
    print_targets(targets)
    report = {
        "benchmark": "fleet",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "machine": info,
        "settings": {
            "sizes": list(sizes), "parallel": PARALLEL, "repeats": repeats, "model": model.source,
            "project_group_benchmark": CHEAP_BENCH, "project_deployment": CFG.model_dump(),
            "fabric_commands": FABRIC_COMMANDS, "fabric_load": LOAD, "playbook": PLAYBOOK,
            "ansible_environment": ANSIBLE_SETTINGS,
            "round_trips": f"connections x {HANDSHAKE_RTTS} + commands x {COMMAND_RTTS} + SFTP sessions "
            f"x {SFTP_SESSION_RTTS} + SFTP requests (Ansible: {ANSIBLE_SFTP_REQUESTS_PER_PUT} per put, "
            "estimated) + streamed uploads (1 each)",
        },
        "note": f"loopback devices share the controller's {cores} cores (and the machine with other work): "
        "wall times compare the tools on loopback, not a real network",
        **results,
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets.values()),
    }  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(rows, cores, args.out_dir / "fleet.png")
    console.print(f"Wrote {args.out_dir / 'fleet.json'} and {args.out_dir / 'fleet.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
