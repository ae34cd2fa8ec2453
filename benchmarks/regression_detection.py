"""Benchmark: the no-regression release gate, its cost per device and the slowdown it catches.

The gate (``fleet.gates.no_regression``) has the device agent measure candidate and active release
interleaved (``agent.py bench CANDIDATE PARITY --baseline CURRENT``: A B A B blocks) and calls a
regression if ``bench.stats.regression`` on the block medians finds it significant (one-sided
Mann-Whitney U, p < alpha) and above the tolerance. At the defaults (alpha 0.05, tolerance 5%, 10
blocks; 1 thread, warmup 50, min_runs 300, min_seconds 2), the agent run as a subprocess of this
interpreter (as a ``local`` device runs it), this measures (1) the wall time of one A/B benchmark
per device and (2) the slowdown it detects. Candidates: the model (``data/06_models/model.onnx``,
else an untrained ``ResidualCNN``) plus a side branch, the input through a chain of MatMuls by a
32x32 orthogonal constant, summed, times 0, added to the output (it depends on the input: ONNX
Runtime cannot fold it). Chain lengths are fitted to the target slowdowns, whose TRUE values come
from a long interleaved single-stream run in this process; the 0% level is the same file as both
candidate and baseline (false positives). Per level, over trials interleaved across levels: mean
measured slowdown, share "significant" (p < alpha), share "called" (significant and above the
tolerance: by design a 3% slowdown is not called).

Writes ``benchmarks/results/regression_detection.json`` and ``.png``; exits 0 whatever the figures.
Other processes on the machine share its cores: their noise is in the figures. From the project root:

    .venv/bin/python benchmarks/regression_detection.py [--quick] [--trials N] [--levels 0,3,5,7,10]

``--quick``: 4 trials per level and a shorter calibration (same A/B settings): coarse rates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from rich.console import Console
from rich.table import Table

from kedro_edge.bench import agent, stats
from kedro_edge.config import RegressionParams
from kedro_edge.fleet.inventory import Group

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "06_models" / "model.onnx"
SEED, PARITY_SAMPLES = 0, 32  # 32 = DeploymentParams.parity_samples
REGRESSION = RegressionParams()
GROUP = Group(min_runs=300)  # Group's default is 200; here min_seconds sets the runs either way
LEVELS, TRIALS, QUICK_TRIALS = "0,3,5,7,10", 20, 4
PROBE_STEPS = (8, 32)  # side-branch lengths measured to fit its cost = fixed + steps * per MatMul
PROBE, QUICK_PROBE = (4, 500), (3, 300)  # rounds, queries per model and round
TRUE, QUICK_TRUE = (12, 1000), (4, 500)  # the long interleaved run that gives the true slowdowns
RELIABLE = 0.9  # "reliably detected": called in at least this share of trials
Row = dict[str, Any]

console = Console(width=None if sys.stdout.isatty() else 150)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 trials per level, short calibration")
    parser.add_argument("--trials", type=int, help=f"per level (default {TRIALS}; --quick {QUICK_TRIALS})")
    parser.add_argument("--levels", default=LEVELS, help=f"target slowdowns in %% (default {LEVELS})")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    args.levels = sorted({float(x) / 100 for x in args.levels.split(",")})
    if args.trials < 1 or args.levels[0] < 0:
        parser.error("--trials must be >= 1 and --levels >= 0")
    return args


def load_model() -> tuple[onnx.ModelProto, str]:
    if MODEL.exists():
        return onnx.load(str(MODEL)), str(MODEL.relative_to(ROOT))
    import torch

    from kedro_edge.export import to_onnx
    from kedro_edge.models import ResidualCNN

    torch.manual_seed(SEED)
    return to_onnx(ResidualCNN(), (1, 1, 32, 32)), "ResidualCNN() (untrained), 1x1x32x32"


def with_side_branch(base: onnx.ModelProto, steps: int) -> onnx.ModelProto:
    """``base`` + sum(input @ W @ ... @ W) * 0 on its output (``steps`` MatMuls): slower, same output."""
    graph = (model := onnx.ModelProto.FromString(base.SerializeToString())).graph
    y, out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{out}_base" if o == out else o for o in node.output]
    width = graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    w, _ = np.linalg.qr(np.random.default_rng(SEED).standard_normal((width, width)))  # values stay finite
    graph.initializer.extend(
        [
            numpy_helper.from_array(w.astype(np.float32), "side_w"),
            numpy_helper.from_array(np.zeros((), np.float32), "side_zero"),
        ]
    )
    for k in range(steps):
        graph.node.append(helper.make_node("MatMul", [y, "side_w"], [y := f"side_{k}"]))
    graph.node.extend(
        [
            helper.make_node("ReduceSum", [y], ["side_sum"], keepdims=0),  # all axes: a scalar
            helper.make_node("Mul", ["side_sum", "side_zero"], ["side_nil"]),
            helper.make_node("Add", [f"{out}_base", "side_nil"], [out]),
        ]
    )
    onnx.checker.check_model(model)
    return model


def save_version(model: onnx.ModelProto, root: Path, name: str) -> Path:
    """``root/versions/<name>/model.onnx``: a device's layout (the agent's facts read ``root``)."""
    (folder := root / "versions" / name).mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx"


def interleaved_p50(paths: list[Path], feeds: list[dict], rounds: int, runs: int) -> list[float]:
    """Median latency (ms) per model; every round: fresh sessions (a session's memory layout shifts
    its latency a little), warmup, ``runs`` queries of each model, in an order rotated per round."""
    times: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        for i in [(r + j) % len(paths) for j in range(len(paths))]:
            session = agent._session(str(paths[i]), GROUP.providers, GROUP.threads)[0]
            agent._single_stream(session, feeds, GROUP.warmup, 0)
            times[i].extend(agent._single_stream(session, feeds, runs, 0))
    return [statistics.median(t) for t in times]


def calibrate(base: onnx.ModelProto, root: Path, feeds: list[dict], levels: list[float], quick: bool) -> Row:
    """Fit the side branch's cost, build a candidate per level, measure the true slowdowns (twice if
    a level missed its target by over 1.5 MatMuls: re-sized from the first measurement)."""
    baseline = save_version(base, root, "baseline")
    probes = [save_version(with_side_branch(base, s), root, f"probe{s}") for s in PROBE_STEPS]
    p0, p1, p2 = interleaved_p50([baseline, *probes], feeds, *(QUICK_PROBE if quick else PROBE))
    slope = (p2 - p1) / (PROBE_STEPS[1] - PROBE_STEPS[0])
    fixed = p1 - p0 - slope * PROBE_STEPS[0]
    console.print(f"    base p50 {p0:.4f} ms; side branch {1e3 * fixed:.1f} us + {1e3 * slope:.2f} us/MatMul")
    target, (rounds, runs) = np.array(levels), QUICK_TRUE if quick else TRUE
    steps = np.where(target > 0, np.maximum(1, np.round((target * p0 - fixed) / slope)), 0).astype(int)
    for attempt in range(2):
        paths = [save_version(with_side_branch(base, s), root, f"side{s}") if s else baseline for s in steps]
        p50 = interleaved_p50([baseline, *paths], feeds, rounds, runs)
        true = np.array(p50[1:]) / p50[0] - 1
        console.print(
            "    true slowdown (MatMuls): "
            + "  ".join(f"{t:+.2%} ({s})" for t, s in zip(true, steps, strict=True))
        )
        fixes = np.where(steps > 0, np.round((target - true) * p50[0] / slope), 0).astype(int)
        if attempt or np.abs(fixes).max() < 2:
            break
        steps = np.where(steps > 0, np.maximum(1, steps + fixes), 0)
    return {
        "baseline": baseline,
        "paths": paths,
        "steps": steps.tolist(),
        "baseline_p50_ms": p50[0],
        "in_process": true.tolist(),
        "candidate_p50_ms": p50[1:],
        "true_runs_per_model": rounds * runs,
        "fit": {
            "probe_steps": PROBE_STEPS,
            "probe_p50_ms": [p0, p1, p2],
            "fixed_us": 1e3 * fixed,
            "per_matmul_us": 1e3 * slope,
            "rounds_runs": QUICK_PROBE if quick else PROBE,
        },
    }


def agent_argv(candidate: Path, baseline: Path, parity: Path) -> list[str]:
    return [
        sys.executable, agent.__file__, "bench", str(candidate), str(parity), "--baseline", str(baseline),
        "--blocks", str(REGRESSION.blocks), "--providers", ",".join(GROUP.providers),
        "--threads", str(GROUP.threads), "--warmup", str(GROUP.warmup),
        "--min-runs", str(GROUP.min_runs), "--min-seconds", str(GROUP.min_seconds),
    ]  # fmt: skip


def ab_trial(candidate: Path, baseline: Path, parity: Path) -> Row:
    """One device-side A/B benchmark, judged as the gate judges it."""
    start = time.perf_counter()
    try:
        argv = agent_argv(candidate, baseline, parity)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - start
    if not out.get("ok"):
        return {"ok": False, "wall_s": wall, "error": out.get("error")}
    base = out["baseline"]
    r = stats.regression(out["block_p50_ms"], base["block_p50_ms"], REGRESSION.alpha, REGRESSION.tolerance)
    return {
        "ok": True,
        "wall_s": wall,
        "load_ms": out["load_ms"] + base["load_ms"],
        "measuring_s": (out["runs"] * out["mean_ms"] + base["runs"] * base["mean_ms"]) / 1000,
        "runs": out["runs"] + base["runs"],
        "p50_ms": [out["p50_ms"], base["p50_ms"]],
        "slowdown": r["slowdown"],
        "p_value": r["p_value"],
        "significant": r["p_value"] < REGRESSION.alpha,
        "called": r["regressed"],
    }


def run_trials(cal: Row, parity: Path, trials: int) -> list[list[Row]]:
    """``trials`` rounds of one trial per level (order rotated): drift and load hit all alike."""
    out: list[list[Row]] = [[] for _ in cal["paths"]]
    for t in range(trials):
        for i in [(t + j) % len(out) for j in range(len(out))]:
            out[i].append(ab_trial(cal["paths"][i], cal["baseline"], parity))
        shown = [f"{r[-1]['slowdown']:+.1%}{'*' * r[-1]['called']}" if r[-1]["ok"] else "failed" for r in out]
        console.print(f"    trial {t + 1}/{trials}: measured {'  '.join(shown)}  (* called)")
    return out


def rate(k: int, n: int, z: float = 1.96) -> tuple[float, list[float]]:
    """k/n and its 95% Wilson interval."""
    if n == 0:
        return math.nan, [math.nan, math.nan]
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, [max(0.0, centre - half), min(1.0, centre + half)]


def figures(ok: list[Row], key: str) -> list[float]:
    return [t[key] for t in ok] or [math.nan]


def summarize(target: float, steps: int, true: float, trials: list[Row]) -> Row:
    ok = [t for t in trials if t["ok"]]
    measured = figures(ok, "slowdown")
    (sig, sig_ci), (called, called_ci) = (
        rate(sum(t[k] for t in ok), len(ok)) for k in ("significant", "called")
    )
    return {
        "target_slowdown": target,
        "side_steps": steps,
        "true_slowdown": true if steps else 0.0,
        "in_process_slowdown": true,
        "trials": len(ok),
        "measured_slower_share": rate(sum(t["slowdown"] > 0 for t in ok), len(ok))[0],
        "failed_trials": len(trials) - len(ok),
        "measured_slowdown_mean": statistics.fmean(measured),
        "measured_slowdown_std": statistics.stdev(measured) if len(ok) > 1 else math.nan,
        "significant_rate": sig,
        "significant_ci95": sig_ci,
        "called_rate": called,
        "called_ci95": called_ci,
        "wall_s_median": statistics.median(figures(ok, "wall_s")),
    }


def wall_summary(trials: list[list[Row]]) -> Row:
    ok = [t for level in trials for t in level if t["ok"]]
    walls = figures(ok, "wall_s")
    return {
        "trials": len(ok),
        "wall_s_median": statistics.median(walls),
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        **{f"{k}_median": statistics.median(figures(ok, k)) for k in ("load_ms", "measuring_s", "runs")},
    }


def conclusion(levels: list[Row]) -> Row:
    reliable = [lv["true_slowdown"] for lv in levels if lv["side_steps"] and lv["called_rate"] >= RELIABLE]
    zero = next((lv for lv in levels if not lv["side_steps"]), {})
    return {
        "reliable_means": f"called in >= {RELIABLE:.0%} of trials",
        "smallest_reliably_detected_true_slowdown": min(reliable, default=None),
        "false_positive_rate_called": zero.get("called_rate"),
        "false_positive_rate_significant": zero.get("significant_rate"),
    }


def pct(x: float | None, ci: list[float] | None = None) -> str:
    return "-" if x is None else f"{x:.0%}" + (f" [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else "")


def results_table(levels: list[Row], title: str) -> Table:
    table = Table(title=title)
    for col in (
        "target",
        "side MatMuls",
        "true slowdown",
        "trials",
        "measured (mean ± sd)",
        "significant (p<α) [95% CI]",
        "called (p<α & >tol) [95% CI]",
        "wall s/device",
    ):
        table.add_column(col, justify="right")
    for lv in levels:
        table.add_row(
            pct(lv["target_slowdown"]),
            str(lv["side_steps"]),
            f"{lv['true_slowdown']:+.2%}" if lv["side_steps"] else "0 (same file)",
            str(lv["trials"]) + (f" ({lv['failed_trials']} failed)" if lv["failed_trials"] else ""),
            f"{lv['measured_slowdown_mean']:+.2%} ± {lv['measured_slowdown_std']:.2%}",
            pct(lv["significant_rate"], lv["significant_ci95"]),
            pct(lv["called_rate"], lv["called_ci95"]),
            f"{lv['wall_s_median']:.2f}",
        )
    return table


def print_summary(w: Row, verdict: Row) -> None:
    console.print(
        f"A/B benchmark per device: median {w['wall_s_median']:.2f} s wall (min {w['wall_s_min']:.2f}, max"
        f" {w['wall_s_max']:.2f}; {w['trials']} runs): {w['measuring_s_median']:.2f} s measuring"
        f" ({w['runs_median']:.0f} queries), {w['load_ms_median']:.0f} ms session loads,"
        " the rest interpreter start, imports, warmup and parity outputs"
    )
    small = verdict["smallest_reliably_detected_true_slowdown"]
    console.print(
        f"Smallest slowdown called in >= {RELIABLE:.0%} of trials: "
        f"{'none of the levels' if small is None else f'{small:+.1%} (true)'}; false positives "
        f"(0%): called {pct(verdict['false_positive_rate_called'])}, significant "
        f"{pct(verdict['false_positive_rate_significant'])}"
    )


def save_plot(levels: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = [100 * lv["true_slowdown"] for lv in levels]
    for key, marker in (("significant", "s"), ("called", "o")):
        y = np.array([100 * lv[f"{key}_rate"] for lv in levels])
        err = np.abs(100 * np.array([lv[f"{key}_ci95"] for lv in levels]).T - y)
        ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=f"{key} (95% CI)")
    ax.axhline(100 * RELIABLE, color="grey", ls=":", lw=1, label=f"{RELIABLE:.0%}")
    ax.axhline(100 * REGRESSION.alpha, color="C0", ls=":", lw=1, label="alpha (nominal false positives)")
    ax.axvline(100 * REGRESSION.tolerance, color="grey", ls="--", lw=1, label="tolerance")
    ax.set(xlabel="true slowdown (%)", ylabel="share of trials (%)", ylim=(-3, 103))
    ax.set_title(
        f"no-regression gate: alpha {REGRESSION.alpha:g}, tolerance {REGRESSION.tolerance:.0%}, "
        f"{REGRESSION.blocks} blocks, {max(lv['trials'] for lv in levels)} trials/level",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> Row:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("onnxruntime", "onnx", "numpy", "scipy", "kedro-edge")},
        "note": "shared machine: other processes may be running; their noise is in the figures",
    }


def measure(base: onnx.ModelProto, args: argparse.Namespace) -> tuple[Row, list[list[Row]]]:
    with tempfile.TemporaryDirectory(prefix="kedro-edge-regression-") as tmp:
        dims = [d.dim_value or PARITY_SAMPLES for d in base.graph.input[0].type.tensor_type.shape.dim]
        batch = np.random.default_rng(SEED).random(dims, dtype=np.float32)
        np.save(parity := Path(tmp) / "parity.npy", batch)
        feeds = [{base.graph.input[0].name: batch[i : i + 1]} for i in range(len(batch))]
        console.print(f"[bold cyan]>[/] calibrate side branches for {', '.join(map(pct, args.levels))}")
        cal = calibrate(base, Path(tmp), feeds, args.levels, args.quick)
        console.print(f"[bold cyan]>[/] {args.trials} A/B trials per level (agent subprocess, defaults)")
        return cal, run_trials(cal, parity, args.trials)


def main() -> int:
    args = parse_args()
    info, start = machine(), time.perf_counter()
    base, source = load_model()
    cal, trials = measure(base, args)
    levels = [summarize(*z) for z in zip(args.levels, cal["steps"], cal["in_process"], trials, strict=True)]
    wall, verdict = wall_summary(trials), conclusion(levels)
    info["load_average_end"] = os.getloadavg()
    console.print(
        results_table(
            levels,
            (
                f"No-regression gate on {source}: baseline p50 {cal['baseline_p50_ms']:.3f} ms, "
                f"{info['cpus_usable']} cores (shared), alpha {REGRESSION.alpha:g}, "
                f"tolerance {REGRESSION.tolerance:.0%}, {REGRESSION.blocks} blocks, "
                f"min_seconds {GROUP.min_seconds:g}, 1 thread"
            ),
        )
    )
    print_summary(wall, verdict)
    report = {
        "benchmark": "regression_detection",
        "quick": args.quick,
        "model": source,
        "machine": info,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "regression": REGRESSION.model_dump(),
            "group": GROUP.model_dump(),
            "trials_per_level": args.trials,
            "parity_samples": PARITY_SAMPLES,
            "agent_argv": agent_argv(Path("CANDIDATE"), Path("BASELINE"), Path("PARITY")),
        },
        "calibration": {k: v for k, v in cal.items() if k not in ("baseline", "paths")},
        "levels": levels,
        "wall_per_device": wall,
        "conclusion": verdict,
        "trials": trials,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "regression_detection.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(levels, args.out_dir / "regression_detection.png")
    console.print(f"Wrote {args.out_dir}/regression_detection.json and .png in {report['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
