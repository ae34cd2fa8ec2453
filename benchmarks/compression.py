"""Benchmark: this project's compression pipeline against single-technique baselines.

Trains (or loads) the FP32 teacher on the default data (sklearn digits resized to 32x32)
with the shipped ``conf/base`` parameters, builds four ONNX models and measures them all the
same way through ONNX Runtime (``kedro_edge.evaluate.evaluate_stage``: test accuracy, file
size, params, MACs, single-stream batch-1 latency on one thread):

- ``fp32``           the FP32 teacher exported to ONNX;
- ``ort_int8_only``  ONNX Runtime static INT8 quantization of the teacher alone;
- ``tp_prune_only``  Torch-Pruning at the pipeline's ratio + fine-tune alone, FP32 ONNX;
- ``kedro_edge``     the pipeline's result: prune -> QAT -> distill -> INT8 ONNX, through the
                     very node functions of ``kedro_edge.nodes``.

The pruning stage is run once: ``tp_prune_only`` is the pruned model the pipeline then
quantizes and distils (same call, so the same model). Latency is measured in interleaved
rounds (each round measures every model once) and the median of the rounds' p50/p90 is
reported, so machine drift hits all models alike. The issue's targets for the final model
are then checked: >= 8x lower p50 and >= 12x smaller than FP32 ONNX at <= 0.5 points less
test accuracy, and faster (p50) than every baseline at equal or better accuracy.

Writes ``benchmarks/results/compression.json`` and ``compression.png``; exits 0 whether or
not the targets pass (it is a measurement, not a test). Run from the project root:

    .venv/bin/python benchmarks/compression.py [--quick] [--reuse-teacher data/06_models/teacher.pt]

``--quick`` is a smoke test (one-epoch training stages on a slice of the training split,
short latency runs): its figures mean nothing. ``--reuse-teacher`` loads a teacher saved by
``kedro_edge.io.TorchModuleDataset`` instead of training one; it must have been trained on
the same data split.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

from kedro_edge import config, data, export, nodes, plots  # noqa: E402
from kedro_edge.evaluate import evaluate_stage  # noqa: E402
from kedro_edge.io import DigitsDataset, TorchModuleDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "base"
PARAMETER_FILES = (
    "parameters_training.yml",
    "parameters_compression.yml",
    "parameters_validation.yml",
)
SEED = 0

# Latency per model and round: the defaults are stricter than the pipeline's validation.
LATENCY = config.LatencyParams(threads=1, warmup=100, min_runs=1000, min_seconds=1.0)
QUICK_LATENCY = config.LatencyParams(threads=1, warmup=10, min_runs=50, min_seconds=0.05)
ROUNDS, QUICK_ROUNDS = 3, 2
# --quick: every training stage one epoch on a slice of the training split (the validation
# and test splits stay whole, so every measurement runs as at defaults)
QUICK_TRAIN_SAMPLES = 384
QUICK_OVERRIDES = {
    "training.epochs": 1,
    "compression.prune.finetune_epochs": 1,
    "compression.distill.epochs": 1,
}

FP32, FINAL = "fp32", "kedro_edge"
BASELINES = ("ort_int8_only", "tp_prune_only")

# The targets for the final model, against fp32.
MIN_SPEEDUP = 8.0  # fp32 p50 / final p50
MIN_SIZE_REDUCTION = 12.0  # fp32 bytes / final bytes
MAX_ACCURACY_DROP = 0.5  # points of test accuracy

# piped output (a log file) gets a width that fits the table instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass(frozen=True)
class Candidate:
    """One benchmarked model: the ONNX graph that runs and the torch module it comes from."""

    name: str
    description: str
    onnx_model: onnx.ModelProto
    module: nn.Module


# --- setup ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1-epoch training on a training slice, short latency runs",
    )
    parser.add_argument(
        "--reuse-teacher",
        type=Path,
        metavar="PATH",
        help="a teacher .pt saved by TorchModuleDataset instead of training one",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"interleaved latency rounds (default {ROUNDS}; {QUICK_ROUNDS} with --quick)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where compression.json and compression.png go",
    )
    args = parser.parse_args()
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_dotted(params: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        params = params.setdefault(key, {})
    params[leaf] = value


def load_parameters(quick: bool) -> dict[str, Any]:
    """The shipped parameters (with the --quick overrides), validated like the pipeline does."""
    params: dict[str, Any] = {}
    for name in PARAMETER_FILES:
        params.update(yaml.safe_load((CONF / name).read_text()) or {})
    if quick:
        for dotted, value in QUICK_OVERRIDES.items():
            set_dotted(params, dotted, value)
    config.validate_parameters(params)
    return params


def shrink_train(model_input: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` training samples (the split is already shuffled); other splits whole."""
    return {**model_input, "x_train": model_input["x_train"][:n], "y_train": model_input["y_train"][:n]}


@contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Print one line when a phase starts and one when it ends; record its duration."""
    console.print(f"[bold cyan]>[/] {name} ...")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)
    console.print(f"[green]  done[/] {name} in {timings[name]:.1f} s")


# --- models --------------------------------------------------------------------------------


def get_teacher(model_input: dict[str, np.ndarray], params: dict, reuse: Path | None) -> nn.Module:
    if reuse is None:
        return nodes.train_teacher(model_input, params["model"], params["training"])
    teacher = TorchModuleDataset(str(reuse)).load()
    with torch.no_grad():  # fail here, not mid-benchmark, if it does not fit the data
        teacher(data.Splits(model_input).example())
    return teacher


def teacher_source(reuse: Path | None) -> dict[str, str]:
    if reuse is None:
        return {"source": "trained with parameters.model and parameters.training"}
    return {
        "source": str(reuse),
        "note": "loaded, not trained: parameters.model and "
        "parameters.training may not be what made it (see models.fp32 for its footprint)",
    }


def build_candidates(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    params: dict,
    timings: dict[str, float],
) -> tuple[list[Candidate], dict]:
    """fp32, the two single-technique baselines and the pipeline's model; the prune report."""
    comp, train = params["compression"], params["training"]
    cfg = config.parse(config.CompressionParams, comp, "compression")
    splits = data.Splits(model_input)
    with phase("export fp32 teacher", timings):
        teacher_onnx = nodes.export_teacher(teacher, model_input, comp)
    with phase("ORT static INT8 of the teacher (ort_int8_only)", timings):
        calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
        int8_only = export.quantize_int8(teacher_onnx, calib, cfg.quantize)
    with phase("prune + fine-tune (tp_prune_only, and the pipeline's first stage)", timings):
        pruned, prune_report = nodes.prune_teacher(teacher, model_input, comp, train)
        pruned_onnx = export.to_onnx(pruned, splits.input_shape, cfg.export.opset)
    with phase("QAT + distillation + INT8 export (kedro_edge)", timings):
        qat = nodes.quantize_student(pruned, model_input, comp)
        student = nodes.distill_student(qat, teacher, model_input, comp, train)
        final_onnx = nodes.export_model(student, model_input, comp)
    candidates = [
        Candidate(FP32, "FP32 teacher, ONNX", teacher_onnx, teacher),
        Candidate("ort_int8_only", "ORT static INT8 (QDQ) of the teacher", int8_only, teacher),
        Candidate("tp_prune_only", "Torch-Pruning + fine-tune, FP32 ONNX", pruned_onnx, pruned),
        Candidate(FINAL, "prune -> QAT -> distill -> ORT INT8", final_onnx, student),
    ]
    return candidates, prune_report


# --- measurement ---------------------------------------------------------------------------


def measure(
    candidates: list[Candidate],
    splits: data.Splits,
    latency: config.LatencyParams,
    rounds: int,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """``evaluate_stage`` for every model, interleaved in rounds; latency = median of rounds."""
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    for r in range(rounds):
        for c in candidates:
            figures = evaluate_stage(c.onnx_model, c.module, splits, latency, batch_size)
            runs[c.name].append(figures)
            console.print(
                f"    round {r + 1}/{rounds}  {c.name:<14} "
                f"p50 {figures['latency_p50_ms']:.3f} ms  "
                f"p90 {figures['latency_p90_ms']:.3f} ms  "
                f"({figures['latency_runs']} runs)"
            )
    return {c.name: combine_rounds(runs[c.name], c.description) for c in candidates}


def combine_rounds(runs: list[dict[str, Any]], description: str) -> dict[str, Any]:
    """The first round's accuracy/size/footprint (deterministic) and the rounds' median latency."""
    out = {"description": description, **copy.deepcopy(runs[0])}
    del out["latency_runs"]
    for key in ("latency_p50_ms", "latency_p90_ms"):
        per_round = [r[key] for r in runs]
        out[key] = statistics.median(per_round)
        out[f"{key}_rounds"] = per_round
    out["latency_runs_per_round"] = [r["latency_runs"] for r in runs]
    return out


def add_relative(models: dict[str, dict[str, Any]]) -> None:
    """Each model against fp32: accuracy delta (points), size reduction and p50 speed-up."""
    ref = models[FP32]
    for fig in models.values():
        fig["accuracy_delta_points"] = 100 * (fig["accuracy"] - ref["accuracy"])
        fig["size_reduction"] = ref["size_bytes"] / fig["size_bytes"]
        fig["p50_speedup"] = ref["latency_p50_ms"] / fig["latency_p50_ms"]


def target(description: str, measured: Any, threshold: Any, passed: bool) -> dict[str, Any]:
    return {"description": description, "measured": measured, "threshold": threshold, "passed": bool(passed)}


def evaluate_targets(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets for the final model, each with its measured value and pass/fail."""
    final = models[FINAL]
    drop = round(-final["accuracy_delta_points"], 9) + 0.0  # no float noise at 0.5, no -0
    targets = {
        "p50_speedup_vs_fp32": target(
            f"final p50 latency at least {MIN_SPEEDUP:g}x lower than FP32 ONNX",
            final["p50_speedup"],
            MIN_SPEEDUP,
            final["p50_speedup"] >= MIN_SPEEDUP,
        ),
        "size_reduction_vs_fp32": target(
            f"final ONNX file at least {MIN_SIZE_REDUCTION:g}x smaller than FP32 ONNX",
            final["size_reduction"],
            MIN_SIZE_REDUCTION,
            final["size_reduction"] >= MIN_SIZE_REDUCTION,
        ),
        "accuracy_drop_vs_fp32": target(
            f"final test accuracy at most {MAX_ACCURACY_DROP:g} points below FP32",
            drop,
            MAX_ACCURACY_DROP,
            drop <= MAX_ACCURACY_DROP,
        ),
    }
    for name in BASELINES:
        base = models[name]
        speedup = base["latency_p50_ms"] / final["latency_p50_ms"]
        delta = round(100 * (final["accuracy"] - base["accuracy"]), 9) + 0.0
        targets[f"beats_{name}"] = target(
            f"final p50 lower than {name}'s at equal or better test accuracy",
            {"p50_speedup": speedup, "accuracy_delta_points": delta},
            {"p50_speedup": "> 1", "accuracy_delta_points": ">= 0"},
            speedup > 1 and delta >= 0,
        )
    return targets


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "versions": {
            pkg: version(pkg)
            for pkg in ("onnxruntime", "torch", "onnx", "torch-pruning", "numpy", "kedro-edge")
        },
    }


def cpu_model() -> str | None:
    """The CPU's name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# --- output --------------------------------------------------------------------------------


def results_table(models: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = (
        "model",
        "accuracy %",
        "Δ acc (pts)",
        "size KiB",
        "size ×",
        "params",
        "MACs",
        "p50 ms",
        "p90 ms",
        "p50 speed-up ×",
    )
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for name, f in models.items():
        table.add_row(
            name,
            f"{100 * f['accuracy']:.2f}",
            f"{f['accuracy_delta_points']:+.2f}",
            f"{f['size_bytes'] / 1024:.1f}",
            f"{f['size_reduction']:.1f}",
            f"{f['params']:,}",
            f"{f['macs']:,}",
            f"{f['latency_p50_ms']:.3f}",
            f"{f['latency_p90_ms']:.3f}",
            f"{f['p50_speedup']:.2f}",
        )
    return table


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    console.print("[bold]Targets (final model, kedro_edge):")
    for name, t in targets.items():
        mark = "[green]PASS[/]" if t["passed"] else "[red]FAIL[/]"
        measured = t["measured"]
        if isinstance(measured, dict):
            shown = ", ".join(f"{k} {v:.3g}" for k, v in measured.items())
        else:
            shown = f"{measured:.3g} (threshold {t['threshold']:g})"
        console.print(f"  {mark}  {name}: {t['description']} — measured {shown}")
    passed = sum(t["passed"] for t in targets.values())
    console.print(f"[bold]{passed}/{len(targets)} targets passed.")


def save_plot(models: dict[str, dict[str, Any]], path: Path) -> None:
    """The pipeline's figure (``plots.compression_figure``) for the four models, plus target lines."""
    fig = plots.compression_figure({"stages": models})
    ax = fig.axes[0]
    ref = models[FP32]
    ax.axvline(
        ref["latency_p50_ms"] / MIN_SPEEDUP,
        color="grey",
        ls="--",
        lw=1,
        label=f"{MIN_SPEEDUP:g}x faster than fp32",
    )
    ax.axhline(
        100 * ref["accuracy"] - MAX_ACCURACY_DROP,
        color="grey",
        ls=":",
        lw=1,
        label=f"fp32 - {MAX_ACCURACY_DROP:g} pts",
    )
    ax.set_title("accuracy vs p50 latency, 1 thread (bubble area ~ file size)")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=120)


def write_results(out_dir: Path, report: dict[str, Any], models: dict[str, dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compression.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(models, out_dir / "compression.png")
    console.print(f"Wrote {out_dir / 'compression.json'} and {out_dir / 'compression.png'}")


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    seed_everything()
    params = load_parameters(args.quick)
    latency = QUICK_LATENCY if args.quick else LATENCY
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    validation = config.parse(config.ValidationParams, params["validation"], "validation")
    timings: dict[str, float] = {}
    if args.quick:
        console.print("[yellow]--quick: smoke test, the figures below mean nothing")

    with phase("load + split data", timings):
        model_input = nodes.split_dataset(DigitsDataset().load(), params["data"])
        if args.quick:
            model_input = shrink_train(model_input, QUICK_TRAIN_SAMPLES)
    splits = data.Splits(model_input)
    teacher_phase = f"load teacher {args.reuse_teacher}" if args.reuse_teacher else "train teacher"
    with phase(teacher_phase, timings):
        teacher = get_teacher(model_input, params, args.reuse_teacher)
    candidates, prune_report = build_candidates(teacher, model_input, params, timings)
    with phase(f"measure {len(candidates)} models x {rounds} interleaved rounds", timings):
        models = measure(candidates, splits, latency, rounds, validation.batch_size)
    add_relative(models)
    targets = evaluate_targets(models)

    console.print(
        results_table(
            models,
            f"Compression benchmark: test accuracy ({len(splits.y('test'))} images), "
            f"ONNX Runtime, batch 1, {latency.threads} thread, median of {rounds} rounds",
        )
    )
    print_targets(targets)
    report = {
        "benchmark": "compression",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "settings": {
            "latency": latency.model_dump(),
            "rounds": rounds,
            "batch_size": validation.batch_size,
            "samples": {split: len(splits.y(split)) for split in data.SPLITS},
            "seed": SEED,
            "teacher": teacher_source(args.reuse_teacher),
            "torch_threads": torch.get_num_threads(),
        },
        "parameters": params,
        "models": models,
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets.values()),
        "prune_report": prune_report,
        "phase_seconds": timings,
    }
    write_results(args.out_dir, report, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
