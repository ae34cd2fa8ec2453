"""Benchmark: the no-regression release gate, what it costs per device and what slowdown it catches.

The gate (``kedro_edge.fleet.gates.no_regression``) has the on-device agent measure the candidate
and the active release interleaved (``agent.py bench CANDIDATE PARITY --baseline CURRENT``, A B A B
blocks) and calls a regression when ``kedro_edge.bench.stats.regression`` on the per-block medians
finds it significant (one-sided Mann-Whitney U, p < alpha) and larger than the tolerance. Here,
with the shipped defaults (``RegressionParams``: alpha 0.05, tolerance 5%, 10 blocks; ``Group``
1 thread, warmup 50, min_seconds 2; min_runs 300):

1. the wall time of one A/B benchmark per device: the agent run as a subprocess with this
   interpreter, as a ``local`` device does (interpreter start, imports, both session loads,
   warmup and measurement);
2. the slowdown it detects: candidates are the model (``data/06_models/model.onnx``, else an
   untrained ``ResidualCNN`` at 1x1x32x32) plus a side branch that costs time and changes
   nothing: a chain of MatMuls of the input by a 32x32 orthogonal constant, summed, times 0,
   added to the logits (it depends on the input, so ONNX Runtime cannot fold it away). The
   chain length is fitted to 3%, 5% and 10%; each candidate's TRUE slowdown is then measured
   with a long interleaved single-stream run of every model in this process. The 0% level is
   the same model file as candidate and baseline (the false-positive rate). Each level gets N
   A/B trials (interleaved across levels); reported: the mean measured slowdown, the share of
   trials with p < alpha ("significant") and the share called a regression ("called":
   significant and above the tolerance; by design a 3% slowdown is not called).

Writes ``benchmarks/results/regression_detection.json`` and ``.png``; exits 0 whatever the
figures. The machine's other processes share its cores: the figures include that noise. From the
project root:

    .venv/bin/python benchmarks/regression_detection.py [--quick] [--trials N] [--levels 0,3,5,10]

``--quick``: 4 trials per level and a shorter calibration (same A/B settings): rates are coarse.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
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
AGENT = Path(agent.__file__)
SEED, PARITY_SAMPLES = 0, 32  # 32 = DeploymentParams.parity_samples
REGRESSION = RegressionParams()
GROUP = Group(min_runs=300)  # Group's default is 200; either way min_seconds sets the runs here
LEVELS, TRIALS, QUICK_TRIALS = "0,3,5,10", 20, 4
PROBE_STEPS = (8, 32)  # side-branch lengths measured to fit cost = a + b * steps
PROBE, QUICK_PROBE = (4, 500), (3, 300)  # (rounds, runs per model and round)
TRUE, QUICK_TRUE = (12, 1000), (4, 500)  # the long interleaved run giving the true slowdowns
RELIABLE = 0.9  # "reliably detected": called in at least this share of trials
Row = dict[str, Any]

console = Console(width=None if sys.stdout.isatty() else 150)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 trials per level, short calibration")
    parser.add_argument("--trials", type=int, help=f"A/B trials per level (default {TRIALS}; "
                                                     f"{QUICK_TRIALS} with --quick)")
    parser.add_argument("--levels", default=LEVELS, help=f"target slowdowns in %% (default {LEVELS})")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    args.levels = sorted({float(x) / 100 for x in args.levels.split(",")})
    if args.trials < 1 or args.levels[0] < 0:
        parser.error("--trials must be >= 1 and --levels >= 0")
    return args


# --- models ----------------------------------------------------------------------------------


def load_model() -> tuple[onnx.ModelProto, str]:
    if MODEL.exists():
        return onnx.load(str(MODEL)), str(MODEL.relative_to(ROOT))
    import torch

    from kedro_edge.export import to_onnx
    from kedro_edge.models import ResidualCNN

    torch.manual_seed(SEED)
    return to_onnx(ResidualCNN(), (1, 1, 32, 32)), "ResidualCNN() (untrained), 1x1x32x32"


def with_side_branch(base: onnx.ModelProto, steps: int) -> onnx.ModelProto:
    """``base`` + (sum of input @ W^steps) * 0 on its output: slower, same outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(base)
    graph = model.graph
    x, out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        renamed = [f"{out}_base" if o == out else o for o in node.output]
        del node.output[:]
        node.output.extend(renamed)
    width = graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    w, _ = np.linalg.qr(np.random.default_rng(SEED).standard_normal((width, width)))  # norms stay finite
    graph.initializer.extend([
        numpy_helper.from_array(w.astype(np.float32), "side_w"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "side_axes"),
        numpy_helper.from_array(np.zeros((), np.float32), "side_zero"),
    ])
    y = x
    for k in range(steps):
        graph.node.append(helper.make_node("MatMul", [y, "side_w"], [f"side_{k}"]))
        y = f"side_{k}"
    graph.node.extend([
        helper.make_node("ReduceSum", [y, "side_axes"], ["side_sum"], keepdims=1),
        helper.make_node("Flatten", ["side_sum"], ["side_col"], axis=1),
        helper.make_node("Mul", ["side_col", "side_zero"], ["side_nil"]),
        helper.make_node("Add", [f"{out}_base", "side_nil"], [out]),
    ])
    onnx.checker.check_model(model)
    return model


def save_version(model: onnx.ModelProto, root: Path, name: str) -> Path:
    """``root/versions/<name>/model.onnx``: a device's layout (the agent's facts read ``root``)."""
    (folder := root / "versions" / name).mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx"


# --- true slowdowns (in this process) ----------------------------------------------------------


def interleaved_p50(paths: list[Path], feeds: list[dict], rounds: int, runs: int) -> list[float]:
    """Median latency (ms) of each model: ``runs`` queries per model and round, order rotated."""
    sessions = [agent._session(str(p), GROUP.providers, GROUP.threads)[0] for p in paths]
    for s in sessions:
        agent._single_stream(s, feeds, GROUP.warmup, 0)
    times: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        for i in (order := list(range(len(paths))))[r % len(order):] + order[: r % len(order)]:
            times[i].extend(agent._single_stream(sessions[i], feeds, runs, 0))
    return [statistics.median(t) for t in times]


def calibrate(base: onnx.ModelProto, root: Path, feeds: list[dict], levels: list[float], quick: bool) -> Row:
    """Fit the side branch's cost, build one candidate per level, measure their true slowdowns."""
    baseline = save_version(base, root, "baseline")
    probes = [save_version(with_side_branch(base, s), root, f"probe{s}") for s in PROBE_STEPS]
    p0, p1, p2 = interleaved_p50([baseline, *probes], feeds, *(QUICK_PROBE if quick else PROBE))
    slope = (p2 - p1) / (PROBE_STEPS[1] - PROBE_STEPS[0])
    fixed = p1 - p0 - slope * PROBE_STEPS[0]
    steps = [0 if lv == 0 else max(1, round((lv * p0 - fixed) / slope)) for lv in levels]
    paths = [baseline if s == 0 else save_version(with_side_branch(base, s), root, f"side{s}") for s in steps]
    rounds, runs = QUICK_TRUE if quick else TRUE
    p50 = interleaved_p50([baseline, *paths], feeds, rounds, runs)
    console.print(f"    baseline p50 {p0:.4f} ms; side branch {1000 * fixed:.1f} us + {1000 * slope:.2f} us/step")
    return {
        "baseline": baseline, "paths": paths, "steps": steps, "baseline_p50_ms": p50[0],
        "true_slowdown": [p / p50[0] - 1 for p in p50[1:]], "candidate_p50_ms": p50[1:],
        "fit": {"probe_steps": list(PROBE_STEPS), "probe_p50_ms": [p0, p1, p2], "fixed_us": 1000 * fixed,
                "per_step_us": 1000 * slope},
        "true_run": {"rounds": rounds, "runs_per_round": runs, "runs_per_model": rounds * runs},
    }


# --- the gate's A/B measurement --------------------------------------------------------------


def agent_argv(candidate: Path, baseline: Path, parity: Path) -> list[str]:
    return [
        sys.executable, str(AGENT), "bench", str(candidate), str(parity), "--baseline", str(baseline),
        "--blocks", str(REGRESSION.blocks), "--providers", ",".join(GROUP.providers),
        "--threads", str(GROUP.threads), "--warmup", str(GROUP.warmup),
        "--min-runs", str(GROUP.min_runs), "--min-seconds", str(GROUP.min_seconds),
    ]  # fmt: skip


def ab_trial(candidate: Path, baseline: Path, parity: Path) -> Row:
    """One device-side A/B benchmark, judged as the gate judges it."""
    start = time.perf_counter()
    proc = subprocess.run(agent_argv(candidate, baseline, parity), capture_output=True, text=True,
                          timeout=600, check=False)
    wall = time.perf_counter() - start
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"ok": False, "error": proc.stderr.strip()[-300:]}
    if not out.get("ok"):
        return {"ok": False, "wall_s": wall, "error": out.get("error")}
    base = out["baseline"]
    r = stats.regression(out["block_p50_ms"], base["block_p50_ms"], REGRESSION.alpha, REGRESSION.tolerance)
    return {
        "ok": True, "wall_s": wall, "load_ms": out["load_ms"] + base["load_ms"],
        "measuring_s": (out["runs"] * out["mean_ms"] + base["runs"] * base["mean_ms"]) / 1000,
        "runs": [out["runs"], base["runs"]], "p50_ms": [out["p50_ms"], base["p50_ms"]],
        "slowdown": r["slowdown"], "p_value": r["p_value"],
        "significant": r["p_value"] < REGRESSION.alpha, "called": r["regressed"],
    }


def run_trials(cal: Row, parity: Path, trials: int) -> list[list[Row]]:
    """``trials`` rounds; each round one trial per level (order rotated): drift hits all alike."""
    out: list[list[Row]] = [[] for _ in cal["paths"]]
    n = len(out)
    for t in range(trials):
        for i in [(t + j) % n for j in range(n)]:
            out[i].append(ab_trial(cal["paths"][i], cal["baseline"], parity))
        shown = "  ".join(f"{r[-1]['slowdown']:+.1%}{'*' if r[-1]['called'] else ''}"
                          if r[-1]["ok"] else "failed" for r in out)
        console.print(f"    trial {t + 1}/{trials}: measured {shown}  (* called)")
    return out


# --- summary ---------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of a rate k/n."""
    if n == 0:
        return [math.nan, math.nan]
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, centre - half), min(1.0, centre + half)]


def summarize(target: float, steps: int, true: float, trials: list[Row]) -> Row:
    ok = [t for t in trials if t["ok"]]
    n, measured = len(ok), [t["slowdown"] for t in ok]
    sig, called = sum(t["significant"] for t in ok), sum(t["called"] for t in ok)
    return {
        "target_slowdown": target, "side_steps": steps, "true_slowdown": true, "trials": n,
        "failed_trials": len(trials) - n,
        "measured_slowdown_mean": statistics.fmean(measured) if n else math.nan,
        "measured_slowdown_std": statistics.stdev(measured) if n > 1 else math.nan,
        "significant_rate": sig / n if n else math.nan, "significant_ci95": wilson(sig, n),
        "called_rate": called / n if n else math.nan, "called_ci95": wilson(called, n),
        "wall_s_median": statistics.median(t["wall_s"] for t in ok) if n else math.nan,
    }


def wall_summary(trials: list[list[Row]]) -> Row:
    ok = [t for level in trials for t in level if t["ok"]]
    if not ok:
        return {"trials": 0}
    walls = sorted(t["wall_s"] for t in ok)
    return {
        "trials": len(ok), "wall_s_median": statistics.median(walls), "wall_s_min": walls[0],
        "wall_s_max": walls[-1], "session_loads_ms_median": statistics.median(t["load_ms"] for t in ok),
        "measuring_s_median": statistics.median(t["measuring_s"] for t in ok),
        "queries_median": statistics.median(sum(t["runs"]) for t in ok),
    }


def conclusion(levels: list[Row]) -> Row:
    reliable = [lv for lv in levels if lv["target_slowdown"] > 0 and lv["called_rate"] >= RELIABLE]
    zero = next((lv for lv in levels if lv["target_slowdown"] == 0), None)
    smallest = min(reliable, key=lambda lv: lv["true_slowdown"]) if reliable else None
    return {
        "reliable_means": f"called in >= {RELIABLE:.0%} of trials",
        "smallest_reliably_detected_true_slowdown": smallest and smallest["true_slowdown"],
        "false_positive_rate_called": zero and zero["called_rate"],
        "false_positive_rate_significant": zero and zero["significant_rate"],
    }


# --- output ----------------------------------------------------------------------------------


def pct(x: float, ci: list[float] | None = None) -> str:
    return f"{x:.0%}" + (f" [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else "")


def results_table(levels: list[Row], title: str) -> Table:
    table = Table(title=title)
    for col in ("target", "side MatMuls", "true slowdown", "trials", "measured (mean ± sd)",
                "significant (p<α) [95% CI]", "called (p<α & >tol) [95% CI]", "wall s/device"):
        table.add_column(col, justify="right")
    for lv in levels:
        table.add_row(
            pct(lv["target_slowdown"]), str(lv["side_steps"]),
            "0 (same file)" if lv["side_steps"] == 0 else f"{lv['true_slowdown']:+.2%}",
            str(lv["trials"]) + (f" ({lv['failed_trials']} failed)" if lv["failed_trials"] else ""),
            f"{lv['measured_slowdown_mean']:+.2%} ± {lv['measured_slowdown_std']:.2%}",
            pct(lv["significant_rate"], lv["significant_ci95"]), pct(lv["called_rate"], lv["called_ci95"]),
            f"{lv['wall_s_median']:.2f}",
        )
    return table


def save_plot(levels: list[Row], trials: list[list[Row]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [100 * lv["true_slowdown"] for lv in levels]
    for key, marker in (("significant", "s"), ("called", "o")):
        y = [100 * lv[f"{key}_rate"] for lv in levels]
        err = [[yi - 100 * lv[f"{key}_ci95"][0] for yi, lv in zip(y, levels, strict=True)],
               [100 * lv[f"{key}_ci95"][1] - yi for yi, lv in zip(y, levels, strict=True)]]
        ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=f"{key} (95% CI)")
    ax.axhline(100 * RELIABLE, color="grey", ls=":", lw=1, label=f"{RELIABLE:.0%}")
    for a in (ax, bx):
        a.axvline(100 * REGRESSION.tolerance, color="grey", ls="--", lw=1, label="tolerance")
        a.grid(alpha=0.3)
    ax.set(xlabel="true slowdown (%)", ylabel="share of trials (%)", ylim=(-3, 103))
    ax.set_title(f"detection rate, alpha {REGRESSION.alpha:g}, {REGRESSION.blocks} blocks", fontsize=10)
    for xi, level in zip(x, trials, strict=True):
        bx.scatter([xi] * sum(t["ok"] for t in level), [100 * t["slowdown"] for t in level if t["ok"]],
                   s=12, alpha=0.6, color="C0")
    bx.axline((0, 0), slope=1, color="C1", lw=1, label="measured = true")
    bx.set(xlabel="true slowdown (%)", ylabel="measured slowdown per trial (%)")
    bx.set_title("measured slowdown (ratio of block-median medians)", fontsize=10)
    for a in (ax, bx):
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> Row:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    return {
        "platform": platform.platform(), "cpu_model": model, "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_start": list(os.getloadavg()), "python": platform.python_version(),
        "versions": {p: version(p) for p in ("onnxruntime", "onnx", "numpy", "scipy", "kedro-edge")},
        "note": "shared machine: other processes may be running; their noise is in the figures",
    }


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    info, start = machine(), time.perf_counter()
    base, source = load_model()
    with tempfile.TemporaryDirectory(prefix="kedro-edge-regression-") as tmp:
        root = Path(tmp)
        dims = [d.dim_value or PARITY_SAMPLES for d in base.graph.input[0].type.tensor_type.shape.dim]
        batch = np.random.default_rng(SEED).random(dims, dtype=np.float32)
        np.save(parity := root / "parity.npy", batch)
        feeds = [{base.graph.input[0].name: batch[i : i + 1]} for i in range(len(batch))]
        console.print(f"[bold cyan]>[/] calibrate side branches for {[pct(lv) for lv in args.levels]}")
        cal = calibrate(base, root, feeds, args.levels, args.quick)
        console.print(f"[bold cyan]>[/] {args.trials} A/B trials per level (agent subprocess, defaults)")
        trials = run_trials(cal, parity, args.trials)
        shutil.rmtree(root / "versions", ignore_errors=True)
    levels = [summarize(*z, t) for *z, t in zip(args.levels, cal["steps"], cal["true_slowdown"], trials,
                                                 strict=True)]
    wall, verdict = wall_summary(trials), conclusion(levels)
    info["load_average_end"] = list(os.getloadavg())
    console.print(results_table(levels, (
        f"No-regression gate on {source}: baseline p50 {cal['baseline_p50_ms']:.3f} ms, "
        f"{info['cpus_usable']} cores (shared), alpha {REGRESSION.alpha:g}, tolerance "
        f"{REGRESSION.tolerance:.0%}, {REGRESSION.blocks} blocks, min_seconds {GROUP.min_seconds:g}")))
    if wall["trials"]:
        console.print(
            f"A/B benchmark per device: median {wall['wall_s_median']:.2f} s wall (min {wall['wall_s_min']:.2f}, "
            f"max {wall['wall_s_max']:.2f}; {wall['trials']} runs): {wall['measuring_s_median']:.2f} s "
            f"measuring ({wall['queries_median']:.0f} queries), {wall['session_loads_ms_median']:.0f} ms "
            "session loads, the rest interpreter start, imports and warmup")
    small = verdict["smallest_reliably_detected_true_slowdown"]
    console.print(f"Smallest slowdown called in >= {RELIABLE:.0%} of trials: "
                  f"{'none of the levels' if small is None else f'{small:+.1%} (true)'}; false positives "
                  f"(0%): called {verdict['false_positive_rate_called']}, significant "
                  f"{verdict['false_positive_rate_significant']}")
    report = {
        "benchmark": "regression_detection", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "machine": info, "model": source,
        "settings": {"regression": REGRESSION.model_dump(), "group": GROUP.model_dump(),
                     "trials_per_level": args.trials, "parity_samples": PARITY_SAMPLES,
                     "agent_argv": agent_argv(Path("CANDIDATE"), Path("BASELINE"), Path("PARITY"))},
        "calibration": {k: v for k, v in cal.items() if k not in ("baseline", "paths")},
        "levels": levels, "wall_per_device": wall, "conclusion": verdict,
        "trials": [[{k: v for k, v in t.items()} for t in lv] for lv in trials],
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "regression_detection.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(levels, trials, args.out_dir / "regression_detection.png")
    console.print(f"Wrote {args.out_dir / 'regression_detection.json'} and .png "
                  f"({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
