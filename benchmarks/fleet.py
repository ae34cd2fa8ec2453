"""Benchmark: installing a model on a fleet, the project's rollout vs a naive Fabric loop.

On one loopback fleet of real OpenSSH servers (``kedro_edge.testing.start_fleet``), installs a
fresh version of the same model (one more ONNX metadata entry: a new sha256, a real transfer)
on 1, 8 and 32 devices with ``project`` (``kedro_edge.fleet.deploy.deploy``, max_parallel=16,
no benchmark: probe, SFTP upload, sha256 checked on the device, atomic activation) and ``naive``
(a sequential loop of plain Fabric calls, host keys checked the same way: ``mkdir -p``, ``put``,
``sha256sum``, ``ln -sfn``). A first deploy ("first contact") ships the agent, outside the targets.
Reports wall time, this process's CPU per device (``time.process_time``: sshd, shells and agents
are other processes), SSH connections, remote commands, SFTP sessions and synchronous SFTP
requests (one round trip each, counted by wrapping paramiko's ``SFTPClient``) per device and
model bytes moved; then a re-deploy of the unchanged model (0 bytes), two back-to-back
on-device benchmarks (p50s within 3%) and a projection to 10,000 devices at 50 ms RTT. The
loopback devices share this machine's cores with the controller: loopback speed-ups are bounded.

Writes ``benchmarks/results/fleet.json`` and ``fleet.png``; exits 0 whether or not the targets
pass. Needs ``/usr/sbin/sshd``. From the project root:

    .venv/bin/python benchmarks/fleet.py [--quick]   # --quick: 1 and 4 devices, short benchmarks
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import paramiko
import yaml
from fabric import Connection
from rich.console import Console
from rich.table import Table

from kedro_edge.evaluate import ort_predict, session
from kedro_edge.fleet import rollout
from kedro_edge.fleet.deploy import deploy
from kedro_edge.fleet.inventory import Device, Fleet, Group, parse_fleet
from kedro_edge.fleet.ssh import DeviceError, SSHEndpoint
from kedro_edge.testing import start_fleet

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "06_models" / "model.onnx"
SEED, PARITY_SAMPLES = 0, 8
SIZES, QUICK_SIZES = (1, 8, 32), (1, 4)
MAX_PARALLEL = 16
GROUP = Group(threads=1, warmup=100, min_runs=1000, min_seconds=2)
QUICK_GROUP = Group(threads=1, warmup=10, min_runs=50, min_seconds=0.1)
NAIVE_COMMANDS = 3  # mkdir -p, sha256sum, ln -sfn (the put is SFTP: counted with the SFTP requests)

# Projection: round trips per operation (paramiko client, OpenSSH server) and assumed links.
PROJECT_DEVICES, RTT_S, DEVICE_MBIT_S, UPLINK_MBIT_S = 10_000, 0.050, 20.0, 1000.0
HANDSHAKE_RTTS = 5  # TCP, banners + KEXINIT, ECDH, NEWKEYS + service request, public-key auth
COMMAND_RTTS = 2  # channel open, exec request (output and exit status follow the command)
SFTP_SESSION_RTTS = 3  # channel open, subsystem request, SFTP version exchange
FORMULA = (
    f"round trips/device = connections x {HANDSHAKE_RTTS} + commands x {COMMAND_RTTS} + SFTP sessions x "
    f"{SFTP_SESSION_RTTS} + synchronous SFTP requests; per-device wall = t_local (measured wall at N=1, "
    "~0 RTT: device-side work + controller) + round trips x RTT + bytes/device / device bandwidth; "
    "fleet wall = max(ceil(D / workers) x per-device wall, D x CPU/device / min(workers, cores), "
    "D x bytes/device / controller uplink)"
)
MAX_CPU_MS, MAX_COMMANDS, MIN_SPEEDUP, MAX_P50_DIFF_PCT = 30.0, 2, 2.0, 3.0

console = Console(width=None if sys.stdout.isatty() else 160)
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


# --- the model and the two ways to install it ------------------------------------------------


@dataclass
class Model:
    """The model to ship, its parity batch and host outputs; ``fresh()`` makes new versions."""

    proto: onnx.ModelProto
    parity: np.ndarray
    reference: np.ndarray
    source: str
    folder: Path
    made: int = 0

    def fresh(self) -> rollout.Release:
        """The same graph with one more metadata entry: a new sha256, so a real transfer."""
        self.made += 1
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        proto.metadata_props.add(key="kedro_edge_benchmark_version", value=str(self.made))
        (folder := self.folder / f"v{self.made}").mkdir(parents=True)
        manifest = {"benchmark": "fleet", "version": self.made, "source": self.source}
        return rollout.Release.prepare(proto.SerializeToString(), manifest, self.parity, folder)


def load_model(folder: Path) -> Model:
    """``data/06_models/model.onnx`` if the pipeline made one, else an untrained ResidualCNN."""
    if MODEL.exists():
        proto, source = onnx.load(str(MODEL)), str(MODEL.relative_to(ROOT))
    else:
        import torch

        from kedro_edge.export import to_onnx
        from kedro_edge.models import ResidualCNN

        torch.manual_seed(SEED)
        proto, source = to_onnx(ResidualCNN(), (1, 1, 32, 32)), "ResidualCNN() (untrained), 1x1x32x32"
    dims = [d.dim_value or PARITY_SAMPLES for d in proto.graph.input[0].type.tensor_type.shape.dim]
    parity = np.random.default_rng(SEED).random(dims, dtype=np.float32)
    return Model(proto, parity, ort_predict(session(proto), parity), source, folder)


def project_install(registry: Fleet, devices: list[Device], release: rollout.Release, ref: np.ndarray) -> Row:
    report = deploy(registry, release, ref, devices, max_parallel=MAX_PARALLEL, benchmark=False)
    for entry in report:
        if entry["status"] != "ok":
            console.print(f"[red]  failed[/] {entry['error']}")
    return {
        "connections": [e.get("ssh_connections", 0) for e in report],
        "commands": [e.get("remote_commands", 0) for e in report],
        "model_bytes": sum(e.get("bytes_sent", 0) for e in report),
        "failed": sum(e["status"] != "ok" for e in report),
    }


def naive_device(device: Device, known_hosts: str, release: rollout.Release) -> None:
    """The Fabric way, one device: mkdir, put, sha256sum (checked), ln -sfn; always closed."""
    kwargs = {"key_filename": device.key_filename, "look_for_keys": False}
    conn = Connection(
        device.host,
        user=device.user,
        port=device.port,
        connect_timeout=device.connect_timeout,
        connect_kwargs=kwargs,
    )
    conn.client.load_host_keys(known_hosts)  # Fabric alone accepts any host key: be as strict as the project
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    base, q = f"{device.workdir}/naive", shlex.quote
    folder = f"{base}/{release.sha256}"
    try:
        conn.run(f"mkdir -p {q(folder)}", hide=True, in_stream=False)
        conn.put(str(release.folder / "model.onnx"), f"{folder}/model.onnx")
        digest = conn.run(f"sha256sum {q(folder + '/model.onnx')}", hide=True, in_stream=False).stdout
        if digest.split()[0] != release.sha256:
            raise RuntimeError("sha256 mismatch after upload")
        conn.run(f"ln -sfn {q(folder)} {q(base + '/current')}", hide=True, in_stream=False)
    finally:
        conn.close()


def naive_install(devices: list[Device], known_hosts: str, release: rollout.Release) -> Row:
    failed = 0
    for device in devices:
        try:
            naive_device(device, known_hosts, release)
        except Exception as exc:  # noqa: BLE001 - counted and shown, the loop goes on
            failed += 1
            console.print(f"[red]  failed[/] {device.name}: {type(exc).__name__}: {exc}")
    n = len(devices)
    return {
        "connections": [1] * n,
        "commands": [NAIVE_COMMANDS] * n,
        "model_bytes": release.size_bytes * (n - failed),
        "failed": failed,
    }


def measure(method: str, n: int, install: Callable[[], Row]) -> Row:
    """Run one install over ``n`` devices: wall, this process's CPU, and what it cost per device."""
    sftp_before = Counter(SFTP)
    cpu, start = time.process_time(), time.perf_counter()
    counts = install()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    sftp = SFTP - sftp_before
    console.print(f"    {method:<24} N={n:<3} wall {wall:6.2f} s  CPU {1000 * cpu / n:6.1f} ms/device")
    return {
        "method": method,
        "devices": n,
        "wall_s": wall,
        "wall_ms_per_device": 1000 * wall / n,
        "cpu_ms_per_device": 1000 * cpu / n,
        "ssh_connections_per_device": sum(counts["connections"]) / n,
        "remote_commands_per_device": sum(counts["commands"]) / n,
        "sftp_sessions_per_device": sftp["sessions"] / n,
        "sftp_requests_per_device": sftp["requests"] / n,
        "model_bytes": counts["model_bytes"],
        "failed": counts["failed"],
        "max_ssh_connections": max(counts["connections"]),
        "max_remote_commands": max(counts["commands"]),
    }


def repeatability(device: Device, sha: str, group: Group) -> Row:
    """Two back-to-back on-device benchmarks of installed version ``sha`` over one connection."""
    endpoint = SSHEndpoint(device)
    try:
        workdir = rollout.ensure_agent(endpoint, sha)["workdir"]
        runs = [rollout.benchmark(endpoint, sha, workdir, group) for _ in range(2)]
    except DeviceError as exc:  # reported, and the target fails
        console.print(f"[red]  failed[/] {exc}")
        return {
            "device": device.name,
            "error": str(exc),
            "p50_ms": [math.nan] * 2,
            "runs": [],
            "difference_pct": math.inf,
        }
    finally:
        endpoint.close()
    p50 = [r["p50_ms"] for r in runs]
    return {
        "device": device.name,
        "model_sha256": sha,
        "settings": group.model_dump(),
        "p50_ms": p50,
        "p90_ms": [r["p90_ms"] for r in runs],
        "runs": [r["runs"] for r in runs],
        "difference_pct": 100 * abs(p50[1] - p50[0]) / p50[0],
    }


def run_all(loopback: Any, model: Model, sizes: tuple[int, ...], group: Group) -> Row:
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    registry = parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))
    names, known_hosts = [d.name for d in registry.devices], str(loopback.known_hosts)
    project = partial(project_install, registry, ref=model.reference)
    with phase(f"first contact: agent + model to all {len(names)} devices (not in the targets)"):
        first = partial(project, registry.devices, model.fresh())
        rows = [measure("project, first contact", len(names), first)]
    for n in sizes:
        devices = registry.select(names[:n])
        with phase(f"a fresh version to {n} device(s): naive, then project"):
            rows.append(measure("naive", n, partial(naive_install, devices, known_hosts, model.fresh())))
            rows.append(measure("project", n, partial(project, devices, release := model.fresh())))
    with phase(f"re-deploy the unchanged model to {n} devices"):
        redeploy = measure("project, unchanged", n, partial(project, devices, release))
    with phase(f"two back-to-back on-device benchmarks on {devices[0].name}"):
        repeat = repeatability(devices[0], release.sha256, group)
    return {"rows": rows, "redeploy": redeploy, "repeatability": repeat}


# --- projection and targets ------------------------------------------------------------------


def pick(rows: list[Row], method: str, n: int | None = None) -> Row:
    """The row of ``method`` at ``n`` devices (default: the largest measured)."""
    mine = [r for r in rows if r["method"] == method]
    return max(mine, key=lambda r: r["devices"]) if n is None else next(r for r in mine if r["devices"] == n)


def projection(rows: list[Row], cores: int) -> Row:
    """10,000 devices at 50 ms RTT, from the measured per-device figures (see FORMULA)."""
    out: Row = {
        "formula": FORMULA,
        "assumptions": {
            "devices": PROJECT_DEVICES,
            "rtt_s": RTT_S,
            "device_mbit_s": DEVICE_MBIT_S,
            "controller_uplink_mbit_s": UPLINK_MBIT_S,
            "controller_cores": cores,
        },
    }
    for method, workers in (("project", MAX_PARALLEL), ("naive", 1)):
        big, local = pick(rows, method), pick(rows, method, 1)["wall_s"]
        rtts = (
            big["ssh_connections_per_device"] * HANDSHAKE_RTTS
            + big["sftp_requests_per_device"]
            + big["remote_commands_per_device"] * COMMAND_RTTS
            + big["sftp_sessions_per_device"] * SFTP_SESSION_RTTS
        )
        per_device_bits = 8 * big["model_bytes"] / big["devices"]
        per_device = local + rtts * RTT_S + per_device_bits / (DEVICE_MBIT_S * 1e6)
        cpu_s = big["cpu_ms_per_device"] / 1000
        bounds = {
            "round_trips": math.ceil(PROJECT_DEVICES / workers) * per_device,
            "controller_cpu": PROJECT_DEVICES * cpu_s / min(workers, cores),
            "controller_uplink": PROJECT_DEVICES * per_device_bits / (UPLINK_MBIT_S * 1e6),
        }
        out[method] = {
            "workers": workers,
            "round_trips_per_device": rtts,
            "t_local_s": local,
            "per_device_wall_s": per_device,
            "bounds_s": bounds,
            "fleet_wall_s": max(bounds.values()),
            "limited_by": max(bounds, key=bounds.get),
            "workers_until_cpu_bound": per_device * cores / cpu_s,
        }
    return out


def target(description: str, measured: Any, threshold: Any, passed: bool) -> Row:
    return {"description": description, "measured": measured, "threshold": threshold, "passed": bool(passed)}


def evaluate_targets(results: Row, cores: int) -> dict[str, Row]:
    rows, redeploy = results["rows"], results["redeploy"]["model_bytes"]
    project, naive = pick(rows, "project"), pick(rows, "naive")
    installs = [r for r in rows if r["method"] == "project"]
    worst = {
        "connections": max(r["max_ssh_connections"] for r in installs),
        "commands": max(r["max_remote_commands"] for r in installs),
        "failed installs": sum(r["failed"] for r in installs),
    }
    cpu, speedup = project["cpu_ms_per_device"], naive["wall_s"] / project["wall_s"]
    diff = results["repeatability"]["difference_pct"]
    return {
        "controller_cpu_per_device": target(
            f"project: controller CPU <= {MAX_CPU_MS:g} ms per device (at {project['devices']} devices)",
            cpu,
            MAX_CPU_MS,
            cpu <= MAX_CPU_MS,
        ),
        "connections_and_commands": target(
            f"project: 1 SSH connection and <= {MAX_COMMANDS} remote commands per device to install",
            worst,
            {"connections": 1, "commands": MAX_COMMANDS, "failed installs": 0},
            worst["connections"] == 1 and worst["commands"] <= MAX_COMMANDS and not worst["failed installs"],
        ),
        "speedup_vs_naive": target(
            f"project >= {MIN_SPEEDUP:g}x faster (wall) than naive at {project['devices']} devices "
            f"(loopback devices share the controller's {cores} cores: sshd, shells and SFTP servers "
            "run on this machine, so wall-time speed-ups are bounded by that)",
            speedup,
            MIN_SPEEDUP,
            speedup >= MIN_SPEEDUP,
        ),
        "redeploy_moves_no_bytes": target(
            "re-deploy of the unchanged model moves 0 model bytes", redeploy, 0, redeploy == 0
        ),
        "benchmark_repeatability": target(
            f"two back-to-back on-device benchmarks: p50 within {MAX_P50_DIFF_PCT:g}%",
            diff,
            MAX_P50_DIFF_PCT,
            diff <= MAX_P50_DIFF_PCT,
        ),
    }


# --- output ----------------------------------------------------------------------------------

COLUMNS = (  # header, row key, format
    ("method", "method", "{}"),
    ("N", "devices", "{}"),
    ("wall s", "wall_s", "{:.2f}"),
    ("wall ms/dev", "wall_ms_per_device", "{:.0f}"),
    ("CPU ms/dev", "cpu_ms_per_device", "{:.1f}"),
    ("SSH conn/dev", "ssh_connections_per_device", "{:g}"),
    ("commands/dev", "remote_commands_per_device", "{:g}"),
    ("SFTP sess/dev", "sftp_sessions_per_device", "{:g}"),
    ("SFTP req/dev", "sftp_requests_per_device", "{:g}"),
    ("model bytes", "model_bytes", "{:,}"),
    ("failed", "failed", "{}"),
)


def results_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    for i, (header, _, _) in enumerate(COLUMNS):
        table.add_column(header, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(fmt.format(r[key]) for _, key, fmt in COLUMNS))
    return table


def print_targets(targets: dict[str, Row]) -> None:
    console.print("[bold]Targets:")
    for name, t in targets.items():
        mark, m = "[green]PASS[/]" if t["passed"] else "[red]FAIL[/]", t["measured"]
        shown = ", ".join(f"{k} {v:g}" for k, v in m.items()) if isinstance(m, dict) else f"{m:.3g}"
        console.print(f"  {mark}  {name}: {t['description']} - measured {shown}")
    console.print(f"[bold]{sum(t['passed'] for t in targets.values())}/{len(targets)} targets passed.")


def print_projection(p: Row) -> None:
    a = p["assumptions"]
    console.print(
        f"[bold]Projection: {a['devices']:,} devices at {1000 * a['rtt_s']:g} ms RTT, "
        f"{a['device_mbit_s']:g} Mbit/s per device, {a['controller_uplink_mbit_s']:g} Mbit/s "
        f"controller uplink, {a['controller_cores']} controller cores"
    )
    console.print(f"  {p['formula']}")
    for method in ("project", "naive"):
        m = p[method]
        bounds = ", ".join(f"{k} {v / 60:.1f} min" for k, v in m["bounds_s"].items())
        console.print(
            f"  {method}: {m['round_trips_per_device']:.0f} round trips/device, per-device wall "
            f"{m['per_device_wall_s']:.2f} s, {m['workers']} worker(s) -> {m['fleet_wall_s'] / 60:.1f} min "
            f"(limited by {m['limited_by']}; {bounds})"
            + (f"; CPU-bound from ~{m['workers_until_cpu_bound']:.0f} workers" if m["workers"] > 1 else "")
        )


def save_plot(rows: list[Row], cores: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in (("naive", "s"), ("project", "o")):
        mine = [r for r in rows if r["method"] == method]
        for ax, key in zip(axes, ("wall_s", "cpu_ms_per_device"), strict=True):
            ax.plot([r["devices"] for r in mine], [r[key] for r in mine], marker=marker, label=method)
    axes[1].axhline(MAX_CPU_MS, color="grey", ls="--", lw=1, label=f"target {MAX_CPU_MS:g} ms")
    ns = sorted({r["devices"] for r in rows})
    titles = (f"install wall time (loopback devices share {cores} cores)", "controller CPU time per device")
    for ax, ylabel, title in zip(axes, ("wall time (s)", "CPU (ms/device)"), titles, strict=True):
        ax.set(xscale="log", xlabel="devices", ylabel=ylabel, ylim=(0, None))
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> Row:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "versions": {p: version(p) for p in ("paramiko", "fabric", "invoke", "onnxruntime", "kedro-edge")},
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 and 4 devices, short benchmarks")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where fleet.json and fleet.png go",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sizes, group = (QUICK_SIZES, QUICK_GROUP) if args.quick else (SIZES, GROUP)
    info = machine()
    cores = info["cpus_usable"]
    if args.quick:
        console.print("[yellow]--quick: smoke test, the figures below mean little")
    count_sftp()
    with tempfile.TemporaryDirectory(prefix="kedro-edge-fleet-bench-") as tmp:
        model = load_model(Path(tmp) / "releases")
        with phase(f"start {max(sizes)} loopback sshd"):
            loopback = start_fleet(Path(tmp) / "fleet", max(sizes), port=0)
        with loopback:
            results = run_all(loopback, model, sizes, group)
    rows, rep = results["rows"], results["repeatability"]
    targets, proj = evaluate_targets(results, cores), projection(rows, cores)

    console.print(
        results_table(
            [*rows, results["redeploy"]],
            (
                f"Model install on loopback SSH devices ({model.source}; project: model + manifest + parity, "
                f"max_parallel={MAX_PARALLEL}; naive: the model, sequentially; devices share {cores} cores)"
            ),
        )
    )
    console.print(
        f"On-device benchmark twice on {rep['device']}: p50 {rep['p50_ms'][0]:.4f} ms, "
        f"{rep['p50_ms'][1]:.4f} ms ({rep['difference_pct']:.2f}% apart; runs {rep['runs']})"
    )
    print_projection(proj)
    print_targets(targets)
    report = {
        "benchmark": "fleet",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": info,
        "settings": {
            "sizes": list(sizes),
            "max_parallel": MAX_PARALLEL,
            "model": model.source,
            "benchmark_group": group.model_dump(),
            "naive_commands": NAIVE_COMMANDS,
        },
        "note": f"loopback devices share the controller's {cores} cores (sshd, shells, SFTP servers and "
        "agents run on the same machine): wall-time speed-ups are bounded by that",
        **results,
        "projection": proj,
        "targets": targets,
        "all_installs_ok": not any(r["failed"] for r in [*rows, results["redeploy"]]),
        "all_targets_passed": all(t["passed"] for t in targets.values()),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(rows, cores, args.out_dir / "fleet.png")
    console.print(f"Wrote {args.out_dir / 'fleet.json'} and {args.out_dir / 'fleet.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
