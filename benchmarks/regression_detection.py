"""Benchmark: the no-regression release gate before and after the paired test, on the same trials.

Issue 9, point 5. The gate (``fleet.gates.no_regression``) has the device agent measure candidate
and active release interleaved (``agent.py bench CANDIDATE PARITY --baseline CURRENT --blocks 10``:
pairs of blocks A B, B A, ...) and calls a regression if the per-block medians show a significant
slowdown (p < alpha) larger than the tolerance. Each trial (one agent run) is judged by every test
on the SAME block medians, so before and after differ only in the test:

- **before**: the gate until d4d8cbf, an unpaired one-sided Mann-Whitney U on the 10 + 10 block
  medians (``mann_whitney_before``: the old ``bench.stats.regression``, copied verbatim);
- **after**: the gate now, ``bench.stats.regression``: a one-sided Wilcoxon signed-rank test on the
  10 per-pair log ratios candidate / current (paired: drift between pairs cancels);
- **blocks 3 at alpha 0.05**, which the old validation allowed (``blocks >= 3``, no alpha check).
  Before: Mann-Whitney on the first 3 pairs of each 10-block trial (no extra measurement; those
  blocks are shorter than a 3-block run's, which cannot matter: 3 + 3 ranks give no one-sided p
  below 1/C(6,3) = 0.05, so p < 0.05 never holds, whatever the slowdown). After:
  ``RegressionParams(blocks=3, alpha=0.05)`` is refused; its message is printed (the signed-rank
  test's smallest p with 3 pairs is 1/2^3 = 0.125).

Per test: false positives at 0% (one file as both candidate and baseline) with the tolerance off
(``tolerance=0``: a call is p < alpha and a median slowdown > 0; the test functions are called
directly, as ``RegressionParams`` refuses tolerances under 1%; target <= alpha) and on (the default
5%; target 0), and the detection rate ("called": p < alpha and slowdown > tolerance) at +3/5/7/10%
(+3% is under the tolerance: by design not called), each with n and a 95% Wilson interval
(``kedro_edge.evaluation.statistics.wilson_interval``). Trials are interleaved across levels.

Settings are the defaults (alpha 0.05, tolerance 5%, 10 blocks; 1 thread, warmup 50, min_runs 300,
min_seconds 2), the agent run as a subprocess of this interpreter (as a ``local`` device runs it).
Candidates: the model (``data/06_models/model.onnx``, else an untrained ``ResidualCNN``) plus a side
branch, the input through a chain of MatMuls by a 32x32 orthogonal constant, summed, times 0,
added to the output (it depends on the input: ONNX Runtime cannot fold it). Chain lengths are
fitted to the target slowdowns, whose TRUE values come from a long interleaved single-stream run in
this process (40 rounds; the median over rounds of each round's candidate/baseline ratio). One
trial takes about 4.3 s (2 x min_seconds of measuring), so 5 levels x N trials take about 22 N s,
plus about a minute of calibration.

Writes ``benchmarks/results/regression_detection.json`` (every trial's block medians and p values
included) and ``.png``; exits 0 whatever the figures. Other processes on the machine share its
cores: their noise is in the figures. From the project root:

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
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from scipy.stats import mannwhitneyu

from kedro_edge.bench import agent
from kedro_edge.config import RegressionParams
from kedro_edge.evaluation import regression as stats
from kedro_edge.evaluation.statistics import wilson_interval
from kedro_edge.fleet.inventory import Group

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "06_models" / "model.onnx"
SEED, PARITY_SAMPLES = 0, 32  # 32 = DeploymentParams.parity_samples
REGRESSION = RegressionParams()
GROUP = Group(min_runs=300)  # Group's default is 200; here min_seconds sets the runs either way
LEVELS, TRIALS, QUICK_TRIALS = "0,3,5,7,10", 20, 4
PROBE_STEPS = (8, 32)  # side-branch lengths measured to fit its cost = fixed + steps * per MatMul
PROBE, QUICK_PROBE = (16, 150), (8, 150)  # rounds, queries per model and round
TRUE, QUICK_TRUE = (40, 300), (12, 200)  # the long interleaved run that gives the true slowdowns
RELIABLE = 0.9  # "reliably detected": called in at least this share of trials
Row = dict[str, Any]

console = Console(width=None if sys.stdout.isatty() else 190)


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

    from kedro_edge.models import ResidualCNN
    from kedro_edge.runtimes.onnx_export import to_onnx

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


def interleaved(
    paths: list[Path], feeds: list[dict], rounds: int, runs: int
) -> tuple[list[float], list[float]]:
    """Median latency (ms) per model, and its slowdown against ``paths[0]``: the median over rounds of
    the per-round ratio of medians (paired by round, so load that comes and goes cancels, as in the
    gate). Every round: fresh sessions (a session's memory layout shifts its latency a little),
    warmup, ``runs`` queries of each model, in an order rotated per round."""
    times: list[list[float]] = [[] for _ in paths]
    ratios: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        medians = [0.0] * len(paths)
        for i in [(r + j) % len(paths) for j in range(len(paths))]:
            session = agent._session(str(paths[i]), GROUP.providers, GROUP.threads)[0]
            agent._single_stream(session, feeds, GROUP.warmup, 0)
            times[i].extend(block := agent._single_stream(session, feeds, runs, 0))
            medians[i] = statistics.median(block)
        for i, m in enumerate(medians):
            ratios[i].append(m / medians[0])
    return [statistics.median(t) for t in times], [statistics.median(x) - 1 for x in ratios]


def calibrate(base: onnx.ModelProto, root: Path, feeds: list[dict], levels: list[float], quick: bool) -> Row:
    """Fit the side branch's cost, build a candidate per level, measure the true slowdowns (twice if
    a level missed its target by over 1.5 MatMuls: re-sized from the first measurement)."""
    baseline = save_version(base, root, "baseline")
    probes = [save_version(with_side_branch(base, s), root, f"probe{s}") for s in PROBE_STEPS]
    (p0, p1, p2), (_, s1, s2) = interleaved([baseline, *probes], feeds, *(QUICK_PROBE if quick else PROBE))
    slope = p0 * (s2 - s1) / (PROBE_STEPS[1] - PROBE_STEPS[0])  # ms per MatMul
    fixed = p0 * s1 - slope * PROBE_STEPS[0]
    console.print(f"    base p50 {p0:.4f} ms; side branch {1e3 * fixed:.1f} us + {1e3 * slope:.2f} us/MatMul")
    target, (rounds, runs) = np.array(levels), QUICK_TRUE if quick else TRUE
    steps = np.where(target > 0, np.maximum(1, np.round((target * p0 - fixed) / slope)), 0).astype(int)
    for attempt in range(2):
        paths = [save_version(with_side_branch(base, s), root, f"side{s}") if s else baseline for s in steps]
        p50, slowdowns = interleaved([baseline, *paths], feeds, rounds, runs)
        true = np.array(slowdowns[1:])
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
            "probe_slowdowns": [s1, s2],
            "fixed_us": 1e3 * fixed,
            "per_matmul_us": 1e3 * slope,
            "rounds_runs": QUICK_PROBE if quick else PROBE,
        },
    }


def agent_argv(candidate: Path, baseline: Path, parity: Path) -> list[str]:
    return [
        sys.executable, agent.__file__, "bench", str(candidate), str(parity), "--baseline", str(baseline),
        *GROUP.agent_args(REGRESSION.blocks, GROUP.providers),
    ]  # fmt: skip


def mann_whitney_before(
    candidate: list[float], baseline: list[float], alpha: float = 0.05, tolerance: float = 0.05
) -> Row:
    """BEFORE: ``bench.stats.regression`` until d4d8cbf, verbatim (unpaired, one-sided Mann-Whitney U)."""
    if len(candidate) < 3 or len(baseline) < 3:
        raise ValueError("need at least 3 blocks of each to call a regression")
    slowdown = statistics.median(candidate) / statistics.median(baseline) - 1
    p_value = float(mannwhitneyu(candidate, baseline, alternative="greater").pvalue)
    return {
        "slowdown": slowdown,
        "p_value": p_value,
        "alpha": alpha,
        "tolerance": tolerance,
        "blocks": len(candidate),
        "regressed": bool(p_value < alpha and slowdown > tolerance),
    }


BLOCKS_3 = 3  # what the old validation allowed at alpha 0.05
B10, B3 = f"blocks {REGRESSION.blocks}", f"blocks {BLOCKS_3} (first 3 pairs)"
TESTS: dict[str, tuple[str, Callable[..., Row], int]] = {  # key -> label, test, block pairs judged
    "before": (f"before: Mann-Whitney U, {B10}", mann_whitney_before, REGRESSION.blocks),
    "after": (f"after: Wilcoxon signed-rank, {B10}", stats.regression, REGRESSION.blocks),
    "before_3": (f"before: Mann-Whitney U, {B3}", mann_whitney_before, BLOCKS_3),
}
AFTER_3 = f"after: blocks {BLOCKS_3}, alpha {REGRESSION.alpha:g}"
RATES = {  # key -> what a trial counts as
    "tol_off": "p < alpha and slowdown > 0 (tolerance 0)",
    "called": f"p < alpha and slowdown > tolerance ({REGRESSION.tolerance:.0%})",
}


def judge(candidate: list[float], baseline: list[float]) -> dict[str, Row]:
    """One trial's block medians (pair i: ``candidate[i]``, ``baseline[i]``), judged by every test."""
    out = {}
    for key, (_, test, pairs) in TESTS.items():
        a, b = candidate[:pairs], baseline[:pairs]
        on = test(a, b, REGRESSION.alpha, REGRESSION.tolerance)
        off = test(a, b, REGRESSION.alpha, 0.0)
        out[key] = {
            "slowdown": on["slowdown"],
            "p_value": on["p_value"],
            "tol_off": off["regressed"],
            "called": on["regressed"],
        }
    return out


def ab_trial(candidate: Path, baseline: Path, parity: Path) -> Row:
    """One device-side A/B benchmark (the agent subprocess), judged by every test."""
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
    return {
        "ok": True,
        "judged": judge(out["block_p50_ms"], base["block_p50_ms"]),
        "block_p50_ms": {"candidate": out["block_p50_ms"], "baseline": base["block_p50_ms"]},
        "wall_s": wall,
        "load_ms": out["load_ms"] + base["load_ms"],
        "measuring_s": (out["runs"] * out["mean_ms"] + base["runs"] * base["mean_ms"]) / 1000,
        "runs": out["runs"] + base["runs"],
        "p50_ms": [out["p50_ms"], base["p50_ms"]],
    }


def run_trials(cal: Row, parity: Path, trials: int) -> list[list[Row]]:
    """``trials`` rounds of one trial per level (order rotated): drift and load hit all alike."""
    out: list[list[Row]] = [[] for _ in cal["paths"]]
    for t in range(trials):
        for i in [(t + j) % len(out) for j in range(len(out))]:
            out[i].append(ab_trial(cal["paths"][i], cal["baseline"], parity))
        shown = [
            f"{r[-1]['judged']['after']['slowdown']:+.1%}"
            + "".join(m for m, k in (("b", "before"), ("a", "after")) if r[-1]["judged"][k]["called"])
            if r[-1]["ok"]
            else "failed"
            for r in out
        ]
        console.print(f"    trial {t + 1}/{trials}: measured {'  '.join(shown)}  (b/a: called before/after)")
    return out


def rate(k: int, n: int) -> tuple[float, list[float]]:
    """k/n and its 95% Wilson interval."""
    return (k / n, list(wilson_interval(k, n))) if n else (math.nan, [math.nan, math.nan])


def figures(ok: list[Row], key: str) -> list[float]:
    return [t[key] for t in ok] or [math.nan]


def summarize(target: float, steps: int, true: float, trials: list[Row], test: str) -> Row:
    ok = [t["judged"][test] for t in trials if t["ok"]]
    measured = figures(ok, "slowdown")
    out: Row = {
        "test": test,
        "label": TESTS[test][0],
        "target_slowdown": target,
        "side_steps": steps,
        "true_slowdown": true if steps else 0.0,
        "in_process_slowdown": true,
        "trials": len(ok),
        "failed_trials": len(trials) - len(ok),
        "measured_slowdown_mean": statistics.fmean(measured),
        "measured_slowdown_std": statistics.stdev(measured) if len(ok) > 1 else math.nan,
        "p_value_median": statistics.median(figures(ok, "p_value")),
        "wall_s_median": statistics.median(figures([t for t in trials if t["ok"]], "wall_s")),
    }
    for key in RATES:
        k = sum(t[key] for t in ok)
        out[f"{key}_count"] = k
        out[f"{key}_rate"], out[f"{key}_ci95"] = rate(k, len(ok))
    return out


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
        "false_positive_rate_tolerance_off": zero.get("tol_off_rate"),
        "false_positive_rate_tolerance_off_ci95": zero.get("tol_off_ci95"),
        "false_positive_target_tolerance_off": f"<= alpha ({REGRESSION.alpha:g})",
        "false_positive_rate_tolerance_on": zero.get("called_rate"),
        "false_positive_rate_tolerance_on_ci95": zero.get("called_ci95"),
        "false_positive_target_tolerance_on": "0",
        "targets_met": None
        if not zero
        else bool(zero["tol_off_rate"] <= REGRESSION.alpha and zero["called_rate"] == 0),
    }


def pct(x: float | None, ci: list[float] | None = None) -> str:
    return "-" if x is None else f"{x:.0%}" + (f" [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else "")


def count(lv: Row, key: str) -> str:
    """``k/n  rate [95% Wilson interval]``."""
    return f"{lv[f'{key}_count']}/{lv['trials']}  {pct(lv[f'{key}_rate'], lv[f'{key}_ci95'])}"


def levels_table(by_test: dict[str, list[Row]], title: str) -> Table:
    """The measurement per level, and each test's share of p < alpha & slower (tolerance off)."""
    table = Table(title=title)
    columns = ["target", "side MatMuls", "true slowdown", "trials", "measured, median ratio (mean ± sd)"]
    columns += [f"tol off: {TESTS[k][0].split(':')[0]} {TESTS[k][2]}" for k in TESTS] + ["wall s/trial"]
    for col in columns:
        table.add_column(col, justify="right")
    for i, lv in enumerate(by_test["after"]):
        table.add_row(
            pct(lv["target_slowdown"]),
            str(lv["side_steps"]),
            f"{lv['true_slowdown']:+.2%}" if lv["side_steps"] else "0 (same file)",
            str(lv["trials"]) + (f" ({lv['failed_trials']} failed)" if lv["failed_trials"] else ""),
            f"{lv['measured_slowdown_mean']:+.2%} ± {lv['measured_slowdown_std']:.2%}",
            *(count(by_test[k][i], "tol_off") for k in TESTS),
            f"{lv['wall_s_median']:.2f}",
        )
    return table


def targets_table(by_test: dict[str, list[Row]]) -> Table:
    """False positives (tolerance off: target <= alpha; on: target 0) and detection, per test."""
    alpha = REGRESSION.alpha
    table = Table(title="Before and after on the same trials: k/n, rate [95% Wilson interval]")
    zero_key = next((i for i, lv in enumerate(by_test["after"]) if not lv["side_steps"]), None)
    detect = [(i, lv) for i, lv in enumerate(by_test["after"]) if lv["side_steps"]]
    table.add_column("test", justify="left", no_wrap=True)
    table.add_column(f"FP at 0%, tolerance off\n(target <= alpha {alpha:g})", justify="right")
    table.add_column(f"FP at 0%, tolerance {REGRESSION.tolerance:.0%}\n(target 0)", justify="right")
    for _, lv in detect:
        table.add_column(
            f"called at +{lv['target_slowdown']:.0%}\n(true {lv['true_slowdown']:+.1%})", justify="right"
        )
    for key, (label, _, _) in TESTS.items():
        levels = by_test[key]
        cells = [label]
        if zero_key is None:
            cells += ["-", "-"]
        else:
            zero = levels[zero_key]
            cells += [
                count(zero, "tol_off") + (" ok" if zero["tol_off_rate"] <= alpha else " MISSED"),
                count(zero, "called") + (" ok" if zero["called_rate"] == 0 else " MISSED"),
            ]
        cells += [count(levels[i], "called") for i, _ in detect]
        table.add_row(*cells)
    table.add_row(AFTER_3, "refused by validation", "refused by validation", *("-" for _ in detect))
    return table


def smallest_mann_whitney_p(blocks: int) -> float:
    """Smallest one-sided exact Mann-Whitney p with ``blocks`` + ``blocks`` values: 1 / C(2n, n)."""
    return 1 / math.comb(2 * blocks, blocks)


def print_summary(w: Row, verdicts: dict[str, Row]) -> None:
    console.print(
        f"A/B benchmark per device: median {w['wall_s_median']:.2f} s wall (min {w['wall_s_min']:.2f}, max"
        f" {w['wall_s_max']:.2f}; {w['trials']} runs): {w['measuring_s_median']:.2f} s measuring"
        f" ({w['runs_median']:.0f} queries), {w['load_ms_median']:.0f} ms session loads,"
        " the rest interpreter start, imports, warmup and parity outputs"
    )
    for key, v in verdicts.items():
        small = v["smallest_reliably_detected_true_slowdown"]
        console.print(
            f"{TESTS[key][0]}: smallest slowdown called in >= {RELIABLE:.0%} of trials: "
            f"{'none of the levels' if small is None else f'{small:+.1%} (true)'}; false positives "
            f"tolerance off {pct(v['false_positive_rate_tolerance_off'])}, on "
            f"{pct(v['false_positive_rate_tolerance_on'])}; targets "
            f"{'met' if v['targets_met'] else 'MISSED' if v['targets_met'] is not None else '-'}"
            + (
                f" (it cannot call anything: smallest one-sided p {smallest_mann_whitney_p(BLOCKS_3):g},"
                f" not < alpha {REGRESSION.alpha:g})"
                if key == "before_3"
                else ""
            )
        )


def save_plot(by_test: dict[str, list[Row]], path: Path) -> None:
    """Left: called (tolerance on) vs true slowdown; right: tolerance off. Per test, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, (key, what) in zip(axes, (("called", "called"), ("tol_off", "tolerance off")), strict=True):
        for j, ((test, (label, _, _)), marker) in enumerate(zip(TESTS.items(), "soD", strict=True)):
            levels = by_test[test]
            x = [100 * lv["true_slowdown"] + 0.12 * (j - 1) for lv in levels]  # offset: bars apart
            y = np.array([100 * lv[f"{key}_rate"] for lv in levels])
            err = np.abs(100 * np.array([lv[f"{key}_ci95"] for lv in levels]).T - y)
            ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=label)
        ax.axhline(100 * REGRESSION.alpha, color="C3", ls=":", lw=1, label="alpha (FP target, tol off)")
        ax.axhline(100 * RELIABLE, color="grey", ls=":", lw=1, label=f"{RELIABLE:.0%}")
        if key == "called":
            ax.axvline(100 * REGRESSION.tolerance, color="grey", ls="--", lw=1, label="tolerance")
        ax.set(xlabel="true slowdown (%)", ylim=(-3, 103), title=f"{what}: {RATES[key]}")
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of trials (%), 95% Wilson interval")
    axes[1].legend(fontsize=7, loc="center right")
    trials = max(lv["trials"] for lv in by_test["after"])
    fig.suptitle(
        f"no-regression gate before/after, same trials: alpha {REGRESSION.alpha:g}, "
        f"{trials} trials/level; at 0% the rate is the false-positive rate",
        fontsize=9,
    )
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


def validation_3() -> str:
    """What the new validation says about the configuration the old one allowed."""
    try:
        RegressionParams(blocks=BLOCKS_3, alpha=REGRESSION.alpha)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    return "accepted (!)"


def analyse(cal: Row, trials: list[list[Row]], levels: list[float]) -> dict[str, list[Row]]:
    zipped = list(zip(levels, cal["steps"], cal["in_process"], trials, strict=True))
    return {key: [summarize(*z, test=key) for z in zipped] for key in TESTS}


def main() -> int:
    args = parse_args()
    info, start = machine(), time.perf_counter()
    refused = validation_3()
    console.print(f"RegressionParams(blocks={BLOCKS_3}, alpha={REGRESSION.alpha:g}) now: {refused}")
    base, source = load_model()
    cal, trials = measure(base, args)
    by_test = analyse(cal, trials, args.levels)
    wall, verdicts = wall_summary(trials), {key: conclusion(levels) for key, levels in by_test.items()}
    info["load_average_end"] = os.getloadavg()
    title = (
        f"No-regression gate on {source}: baseline p50 {cal['baseline_p50_ms']:.3f} ms, "
        f"{info['cpus_usable']} cores (shared), alpha {REGRESSION.alpha:g}, tolerance "
        f"{REGRESSION.tolerance:.0%}, {REGRESSION.blocks} blocks, min_seconds {GROUP.min_seconds:g}, 1 thread"
    )
    console.print(levels_table(by_test, title))
    console.print(targets_table(by_test))
    console.print(f"{AFTER_3}: RegressionParams(blocks={BLOCKS_3}, alpha={REGRESSION.alpha:g}) -> {refused}")
    print_summary(wall, verdicts)
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
            "tests": {key: {"label": label, "pairs": pairs} for key, (label, _, pairs) in TESTS.items()},
            "rates": RATES,
        },
        "calibration": {k: v for k, v in cal.items() if k not in ("baseline", "paths")},
        "levels_by_test": by_test,
        "blocks_3": {
            "config": {"blocks": BLOCKS_3, "alpha": REGRESSION.alpha},
            "validation_now": refused,
            "smallest_p_before": smallest_mann_whitney_p(BLOCKS_3),
            "smallest_p_after": stats.smallest_p_value(stats.pairs_of(BLOCKS_3)),
        },
        "wall_per_device": wall,
        "conclusion": verdicts,
        "trials": trials,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "regression_detection.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(by_test, args.out_dir / "regression_detection.png")
    console.print(f"Wrote {args.out_dir}/regression_detection.json and .png in {report['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
