"""Benchmark: one controller, hundreds of SSH devices, and a projection for 10,000 at 50 ms RTT.

What: a fleet of real OpenSSH servers on loopback (``kedro_edge.testing.start_fleet``: one
``sshd`` per device on 127.0.0.2 ...), default 200, and a fresh version of the same model (one
more ONNX metadata entry: a new sha256, so a real transfer) rolled out by
``kedro_edge.fleet.rollout.staged_rollout`` exactly as a release runs it, with the default
waves ``[1, "25%", "100%"]``. As in ``benchmarks/fleet.py`` the on-device step is cut to the
least the rollout allows (regression gate off, warmup 0, one run), so what is measured is the
shipping machinery, and each device is benchmarked in the command that installs it
(``max_parallel_benchmarks = max_parallel``: each device is its own hardware).

1. **All N devices, one controller** at ``max_parallel`` 16 and 64 (the default), and at 32 with
   ``max_open_connections`` 32 (the bound at work: connections closed and opened again): wall time;
   controller CPU per device (``time.process_time``: every thread of this process); peak
   threads, open file descriptors, resident memory and open SSH connections, sampled every 100
   ms (the sampler's own CPU taken out; the rollout keeps at most ``max_open_connections``
   open); per device SSH connections, remote commands and bytes sent (from the release record).
2. **Network latency on a subset** (default 8 devices): this kernel has no netem, so each of
   them is reached through ``kedro_edge.testing.delay`` (a TCP proxy in its own process that
   delays every chunk 25 ms each way: a 50 ms round trip, on 127.0.1.x). The subset is rolled
   out one device at a time (``max_parallel`` 1, the default waves), direct and through the
   proxy, 3 times interleaved: each step's time per device at 0 and at 50 ms RTT, the round
   trips that step waits for ((delayed - direct) / RTT), and the proxy's own count of turns
   (client -> server then server -> client) per device.
3. **Projection for 10,000 devices at 50 ms RTT**: the default waves on one group of 10,000
   give steps of 1, 2,499 and 7,500 devices; each step takes ``ceil(n / P)`` rounds of its
   per-device time at 50 ms (measured in 2, this machine's device work included), and the
   controller's CPU for 10,000 devices (measured in 1, on one core: Python's GIL) bounds it
   from below. Checked first on the subset itself: the same model predicts the delayed subset
   at ``max_parallel`` 4, which is then measured.

The devices are processes on THIS machine and share its cores with the controller: the wall
times of part 1 are bound by the devices' own CPU (Python and onnxruntime start-up per
command), not the controller's, which is why the projection takes per-device times from the
one-at-a-time runs of part 2. Target (issue 13): the projection <= 10 minutes from one
controller. Writes ``benchmarks/results/fleet_scale.json`` and ``fleet_scale.png``. Needs
``/usr/sbin/sshd``. From the project root:

    .venv/bin/python benchmarks/fleet_scale.py [--devices 200] [--subset 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from kedro_edge.config import DeploymentParams, RegressionParams
from kedro_edge.fleet import rollout as rollout_module
from kedro_edge.fleet.inventory import Fleet, parse_fleet
from kedro_edge.testing import start_fleet
from kedro_edge.testing.delay import DelayProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import (  # noqa: E402  (the fleet benchmark's model, cheap benchmark and step timing)
    CHEAP_BENCH,
    PHASES,
    ROOT,
    console,
    device_cpu,
    load_model,
    machine,
    phase,
)

DELAY_MS = 25.0  # each way
RTT_S = 2 * DELAY_MS / 1000
TARGET_DEVICES, TARGET_S = 10_000, 600.0
PARALLELS = (16, 64)
BOUNDED = 32  # a run with max_parallel = max_open_connections = 32: the bound, and what it costs
PROJECT_AT = (16, 64, 128, 256)
REPEATS = 3
WAVES: list[int | str] = [1, "25%", "100%"]
Row = dict[str, Any]


def cfg(parallel: int, **extra: Any) -> DeploymentParams:
    extra = {"max_open_connections": max(256, parallel), **extra}
    return DeploymentParams(
        waves=WAVES, max_parallel=parallel, max_parallel_benchmarks=parallel, lock_timeout=30,
        regression=RegressionParams(enabled=False, blocks=3), parity_samples=8, **extra,
    )  # fmt: skip


class Sampler:
    """Peak threads, file descriptors and resident memory of this process, every 100 ms."""

    def __init__(self) -> None:
        self.peak: Counter[str] = Counter()
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
            now = {
                "threads": int(status["Threads"]),
                "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
                "fds": len(os.listdir("/proc/self/fd")),
            }
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
        self.cpu = time.thread_time()  # its own, taken out of the controller's figure

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rollout(registry: Fleet, names: list[str], model: Any, config: DeploymentParams) -> Row:
    """One staged rollout of a fresh version to ``names``: wall, CPU, resources, per-device costs."""
    devices = registry.select(names)
    cand = model.fresh()
    PHASES.clear()
    baseline = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    with Sampler() as sampler:
        cpu, start = time.process_time(), time.perf_counter()
        record = rollout_module.staged_rollout(registry, cand, model.reference, config, devices).to_json()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    cpu -= sampler.cpu
    entries, n = record["devices"], len(devices)
    bad = [e for e in entries if e["decision"] not in ("activated", "already active")]
    for e in bad[:5]:
        console.print(f"[red]  failed[/] {e['device']}: {e.get('reason')}")
    per = {
        k: sum(e.get(k, 0) for e in entries) / n for k in ("ssh_connections", "remote_commands", "bytes_sent")
    }
    return {
        "devices": n, "parallel": config.max_parallel, "max_open_connections": config.max_open_connections,
        "wall_s": wall, "cpu_ms_per_device": 1000 * cpu / n,
        "verdict": record["verdict"], "failed": len(bad),
        "peak_threads": sampler.peak["threads"], "peak_fds": sampler.peak["fds"],
        "peak_rss_mib": sampler.peak["rss_mib"], "rss_baseline_mib": baseline,
        "peak_connections": record["controller"]["connections_peak"],
        "lease_renewals": record["controller"]["lease_renewals"],
        **{f"{k}_per_device": v for k, v in per.items()},
        "steps_s": dict(PHASES),
    }  # fmt: skip


def proxied_registry(loopback: Any, registry_raw: dict, names: list[str], root: Path) -> tuple[Fleet, dict]:
    """The subset reached through the delay proxy on 127.0.1.x (same host keys, known_hosts lines
    under the proxy's addresses)."""
    raw = yaml.safe_load(yaml.safe_dump(registry_raw))
    keys = {}
    for line in loopback.known_hosts.read_text().splitlines():
        where, rest = line.split(None, 1)
        keys[where] = rest
    mapping, extra, port = {}, [], loopback.port
    chosen = set(names)
    for entry in raw["devices"]:
        if entry["name"] not in chosen:
            continue
        host = entry["host"]
        proxy = "127.0.1." + host.rsplit(".", 1)[1]
        mapping[(proxy, port)] = (host, port)
        extra.append(f"[{proxy}]:{port} {keys[f'[{host}]:{port}']}\n")
        entry["host"] = proxy
    root.mkdir(parents=True, exist_ok=True)
    known = root / "known_hosts.proxied"
    known.write_text("".join(extra))
    raw["defaults"]["known_hosts"] = str(known)
    raw["devices"] = [e for e in raw["devices"] if e["name"] in chosen]
    return parse_fleet(raw, "devices.proxied.yml", root=str(root)), mapping


def closed_links(proxy: DelayProxy, before: int, expected: int, limit: float = 10.0) -> list[Row]:
    """The proxy's counters of the connections since ``before`` (written as each one closes)."""
    deadline = time.monotonic() + limit
    while len(links := proxy.links()[before:]) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return links


def per_device_steps(row: Row) -> dict[str, float]:
    """Seconds per device of each step kind, from a one-at-a-time run (wave numbers dropped)."""
    kinds: dict[str, list[float]] = {}
    counts = _wave_sizes(row["devices"])
    for step, seconds in row["steps_s"].items():
        if step.startswith("wave "):
            number, kind = step.removeprefix("wave ").split(": ", 1)
            kinds.setdefault(kind, []).append(seconds / counts[int(number) - 1])
        else:  # "release leases": the earlier waves' devices
            kinds.setdefault(step, []).append(seconds / sum(counts[:-1]))
    return {k: statistics.mean(v) for k, v in kinds.items()}


def _wave_sizes(n: int) -> list[int]:
    sizes, done = [], 0
    for w in WAVES:
        upto = math.ceil(n * float(w.rstrip("%")) / 100) if isinstance(w, str) else w
        upto = min(n, max(upto, done))
        if upto > done:  # as plan_waves: an empty wave is no wave
            sizes.append(upto - done)
        done = upto
    return sizes


def project(n: int, parallel: int, step_s: dict[str, float], cpu_ms: float) -> Row:
    """Wall for ``n`` devices, ``parallel`` at a time: rounds of each step's per-device time."""
    sizes = _wave_sizes(n)
    latency = 0.0
    for size in sizes:
        latency += math.ceil(size / parallel) * (step_s["install and measure"] + step_s["activate"])
    latency += math.ceil(sum(sizes[:-1]) / parallel) * step_s.get("release leases", step_s["activate"])
    cpu = n * cpu_ms / 1000
    return {"devices": n, "parallel": parallel, "latency_bound_s": latency, "controller_cpu_s": cpu,
            "projected_s": max(latency, cpu), "wave_sizes": sizes}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--subset", type=int, default=8, help="devices also reached through the delay proxy")
    parser.add_argument("--quick", action="store_true", help="smoke test: 24 devices, subset 4, 1 repetition")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    n, subset, repeats = (24, 4, 1) if args.quick else (args.devices, args.subset, REPEATS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # sockets of N devices' sshd and clients
    info = machine() | {"nofile_limit": hard}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kedro-edge-fleet-scale-") as tmp:
        tmp = Path(tmp)
        model = load_model(tmp / "releases")
        with phase(f"start {n} loopback sshd"):
            loopback = start_fleet(tmp / "fleet", n, port=0)
        with loopback:
            raw = yaml.safe_load(loopback.devices_yml.read_text())
            raw["groups"]["loopback"].update(CHEAP_BENCH)
            registry = parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))
            names = [d.name for d in registry.devices]
            with phase(f"first contact: the agent to all {n} devices (outside the figures)"):
                first = rollout(registry, names, model, cfg(64))
            scale: list[Row] = []
            settings = [(p, max(256, p)) for p in PARALLELS] + [(BOUNDED, BOUNDED)]
            for parallel, connections in settings:
                with phase(f"a fresh version to {n} devices, {parallel} at a time, <= {connections} open"):
                    before = device_cpu(loopback, registry.devices)
                    row = rollout(registry, names, model, cfg(parallel, max_open_connections=connections))
                    row["device_cpu_s"] = device_cpu(loopback, registry.devices) - before
                    scale.append(row)
                    console.print(f"    {_brief(row)}")
            few = names[:subset]
            proxied, mapping = proxied_registry(loopback, raw, few, tmp / "proxied")
            stats = tmp / "proxy.jsonl"
            runs: dict[str, list[Row]] = {"direct": [], "delayed": []}
            with DelayProxy(mapping, DELAY_MS, stats) as proxy:
                with phase(
                    f"{subset} devices one at a time, direct and at {2 * DELAY_MS:g} ms RTT, {repeats}x"
                ):
                    for _ in range(repeats):
                        runs["direct"].append(rollout(registry, few, model, cfg(1)))
                        links_before = len(proxy.links())
                        runs["delayed"].append(rollout(proxied, few, model, cfg(1)))
                        runs["delayed"][-1]["links"] = closed_links(proxy, links_before, subset)
                        console.print(f"    direct {_brief(runs['direct'][-1])}")
                        console.print(f"    delayed {_brief(runs['delayed'][-1])}")
                steps = {k: _median_steps([per_device_steps(r) for r in v]) for k, v in runs.items()}
                round_trips = {k: (steps["delayed"][k] - steps["direct"][k]) / RTT_S for k in steps["direct"]}
                turns = [sum(link["turns"] for link in r["links"]) / subset for r in runs["delayed"]]
                check_parallel = max(1, subset // 2)
                with phase(f"model check: {subset} delayed devices, {check_parallel} at a time"):
                    check = rollout(proxied, few, model, cfg(check_parallel))
            cpu_ms = statistics.median(r["cpu_ms_per_device"] for r in scale[: len(PARALLELS)])
            predicted = project(subset, check_parallel, steps["delayed"], 0.0)["latency_bound_s"]
            projections = [project(TARGET_DEVICES, p, steps["delayed"], cpu_ms) for p in PROJECT_AT]
    report = {
        "benchmark": "fleet_scale", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "seconds": time.perf_counter() - started, "machine": info,
        "settings": {"devices": n, "subset": subset, "delay_ms_each_way": DELAY_MS, "waves": WAVES,
                     "repeats": repeats, "group_benchmark": CHEAP_BENCH, "model": model.source,
                     "parallels": list(PARALLELS)},
        "first_contact": first, "scale": scale, "subset_runs": runs,
        "per_device_step_s": steps, "round_trips_per_step": round_trips,
        "proxy_turns_per_device": turns,
        "model_check": {"parallel": check_parallel, "predicted_s": predicted, "measured_s": check["wall_s"]},
        "projection": projections,
    }  # fmt: skip
    default = DeploymentParams().max_parallel
    chosen = next(p for p in projections if p["parallel"] == default)
    report["target"] = {
        "description": f"{TARGET_DEVICES:,} devices at {2 * DELAY_MS:g} ms RTT from one controller <= "
        f"{TARGET_S / 60:g} min (projected, at the default max_parallel)",
        "parallel": default, "measured": chosen["projected_s"], "threshold": TARGET_S,
        "passed": chosen["projected_s"] <= TARGET_S,
    }  # fmt: skip
    print_report(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "fleet_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(report, args.out_dir / "fleet_scale.png")
    console.print(f"Wrote {args.out_dir / 'fleet_scale.json'} and {args.out_dir / 'fleet_scale.png'}")
    return 0


def _median_steps(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _brief(row: Row) -> str:
    return (
        f"N={row['devices']} P={row['parallel']} wall {row['wall_s']:.1f} s, "
        f"CPU {row['cpu_ms_per_device']:.1f} ms/device, peak {row['peak_connections']} connections / "
        f"{row['peak_threads']} threads / "
        f"{row['peak_fds']} fds / {row['peak_rss_mib']:.0f} MiB, {row['verdict']}"
    )


def print_report(report: Row) -> None:
    table = Table(
        title=f"One controller, {report['settings']['devices']} loopback sshd devices (default waves)"
    )
    cols = ("max_parallel", "max open", "wall s", "controller CPU ms/dev", "peak conns", "peak threads",
            "peak fds", "peak RSS MiB", "conn/dev", "commands/dev", "bytes/dev", "verdict")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="right")
    for r in report["scale"]:
        table.add_row(
            str(r["parallel"]), str(r["max_open_connections"]), f"{r['wall_s']:.1f}",
            f"{r['cpu_ms_per_device']:.1f}",
            str(r["peak_connections"]),
            str(r["peak_threads"]), str(r["peak_fds"]), f"{r['peak_rss_mib']:.0f}",
            f"{r['ssh_connections_per_device']:.2f}", f"{r['remote_commands_per_device']:.2f}",
            f"{r['bytes_sent_per_device']:,.0f}", r["verdict"],
        )  # fmt: skip
    console.print(table)
    steps = Table(title=f"Per device, one at a time: each step at 0 and {2 * DELAY_MS:g} ms RTT")
    for c in ("step", "direct s", "delayed s", "round trips waited"):
        steps.add_column(c, justify="right")
    for k, direct in report["per_device_step_s"]["direct"].items():
        delayed = report["per_device_step_s"]["delayed"][k]
        steps.add_row(k, f"{direct:.3f}", f"{delayed:.3f}", f"{report['round_trips_per_step'][k]:.1f}")
    console.print(steps)
    console.print(f"proxy turns per device (one rollout, all steps): {report['proxy_turns_per_device']}")
    mc = report["model_check"]
    console.print(
        f"model check: delayed subset, {mc['parallel']} at a time: predicted {mc['predicted_s']:.1f} s, "
        f"measured {mc['measured_s']:.1f} s"
    )
    proj = Table(title=f"Projection: {TARGET_DEVICES:,} devices at {2 * DELAY_MS:g} ms RTT, one controller")
    for c in ("max_parallel", "latency-bound min", "controller CPU min", "projected min"):
        proj.add_column(c, justify="right")
    for p in report["projection"]:
        minutes = (p["latency_bound_s"], p["controller_cpu_s"], p["projected_s"])
        proj.add_row(str(p["parallel"]), *(f"{m / 60:.1f}" for m in minutes))
    console.print(proj)
    t = report["target"]
    mark = "[green]PASS[/]" if t["passed"] else "[red]FAIL[/]"
    console.print(f"  {mark}  {t['description']}: max_parallel {t['parallel']}, {t['measured'] / 60:.1f} min")


def save_plot(report: Row, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    proj = report["projection"]
    x = [p["parallel"] for p in proj]
    axes[0].plot(
        x, [p["latency_bound_s"] / 60 for p in proj], "o-", label="latency-bound (rounds x step time)"
    )
    axes[0].plot(x, [p["controller_cpu_s"] / 60 for p in proj], "s--", label="controller CPU (one core)")
    axes[0].axhline(TARGET_S / 60, color="grey", ls=":", label="target 10 min")
    axes[0].set(xscale="log", xlabel="max_parallel", ylabel="minutes",
                title=f"{TARGET_DEVICES:,} devices at {2 * DELAY_MS:g} ms RTT (projected)")  # fmt: skip
    axes[0].set_xticks(x, [str(v) for v in x])
    axes[0].legend(fontsize=8)
    steps = report["per_device_step_s"]
    kinds = list(steps["direct"])
    pos = range(len(kinds))
    axes[1].bar([p - 0.2 for p in pos], [steps["direct"][k] for k in kinds], 0.4, label="direct (loopback)")
    axes[1].bar(
        [p + 0.2 for p in pos], [steps["delayed"][k] for k in kinds], 0.4, label=f"{2 * DELAY_MS:g} ms RTT"
    )
    for p, k in zip(pos, kinds, strict=True):
        axes[1].annotate(f"{report['round_trips_per_step'][k]:.1f} RTT", (p + 0.2, steps["delayed"][k]),
                         ha="center", va="bottom", fontsize=8)  # fmt: skip
    axes[1].set_xticks(list(pos), kinds, fontsize=8)
    axes[1].set(ylabel="seconds per device", title="one device's steps (median of runs)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
