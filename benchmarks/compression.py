"""Benchmark: this project's compression pipeline against single-technique peers, per architecture.

Trains (or loads) an FP32 teacher on the default task (the generated glyphs of
``conf/base/catalog.yml``'s ``raw_images``, split with ``parameters.data``) with the shipped
``conf/base`` parameters, builds seven ONNX models from it and runs every one of them through
ONNX Runtime the same way (``kedro_edge.evaluate.evaluate_stage``):

- ``fp32``                   the FP32 teacher exported to ONNX;
- ``ort_int8_only``          ONNX Runtime ``quantize_static`` of the teacher alone
                             (``export.quantize_int8``, the pipeline's ``compression.quantize``);
- ``nncf_ptq``               OpenVINO NNCF ``nncf.quantize`` on the teacher's ``onnx.ModelProto``,
                             calibrated on the pipeline's calibration images (NNCF defaults);
- ``nncf_accuracy_control``  ``nncf.quantize_with_accuracy_control`` on the same, allowed the
                             pipeline's gate ``validation.gates.max_accuracy_drop`` (absolute),
                             its metric top-1 on the VALIDATION split (the test split stays unseen);
- ``tp_prune_only``          Torch-Pruning at the pipeline's ratio + fine-tune alone, FP32 ONNX;
- ``prune_ptq``              that pruned model + plain ORT static INT8 (no QAT, no distillation:
                             the difference to ``kedro_edge`` is what QAT + distillation buy);
- ``kedro_edge``             the pipeline's model.onnx: prune -> QAT -> distill -> INT8, through
                             the very node functions of ``kedro_edge.nodes``.

Columns: clean test accuracy with its Wilson interval and n; robust accuracy on the pipeline's
perturbed test copy (``validation.robustness``); the paired change vs ``fp32`` (points,
paired-bootstrap interval, exact McNemar p) clean and robust; ONNX size and reduction;
params; MACs; p50/p90 latency at batch 1 on one thread and p50 as a ratio to ``fp32``.
Latency is measured in interleaved rounds (every model once per round, the order reversed
every other round) and the median of the rounds' p50/p90 is reported, so machine drift hits
all models alike. A peer that fails to build (NNCF above all) is recorded with its error and
the rest goes on.

Targets for the final model (``kedro_edge``): p50 at least 8x lower and file at least 12x
smaller than ``fp32``; clean accuracy drop (point estimate) at most 1.0 point (its interval and
the robust drop are reported); and faster than every peer unless that peer is more accurate,
which counts only when the paired interval of peer-minus-ours lies entirely above 0.

Architectures (``--models``, comma-separated; ``--model`` for one):

- ``residual``   ``parameters.model`` as shipped (``ResidualCNN`` widths 48/96/192);
- ``mobilenet``  ``kedro_edge.models.MobileNetV2`` with its defaults.

Both train with the shipped epochs: measured here (2 cores, idle) an epoch of the 12,800
training images takes ~40 s for MobileNetV2 and ~60 s for the residual net, so a full run
is ~15-25 min per architecture. Depthwise convs suffer most from a busy machine: with a test
suite running beside it, a MobileNetV2 epoch took 387 s (residual: 131 s). Run on an idle machine.

Writes ``benchmarks/results/compression_<model>.json`` and ``compression_<model>.png`` for
each architecture; exits 0 whether or not the targets pass (it is a measurement, not a test).
Run from the project root (``nncf`` is the optional extra ``bench``: ``pip install -e .[bench]``):

    .venv/bin/python benchmarks/compression.py [--models residual,mobilenet] [--quick]
        [--reuse-teacher data/06_models/teacher.pt] [--rounds N] [--out-dir DIR]

``--quick`` is a smoke test: every training stage one epoch on 384 training images, short
latency runs (10 warm-up, 50 runs, 2 rounds); the validation and test splits stay whole, so
every code path, NNCF included, runs as at defaults, but its figures mean nothing.
``--reuse-teacher`` loads a teacher saved by ``kedro_edge.io.TorchModuleDataset`` instead of
training one, for the architecture of its class; the ``splits.npz`` the same run wrote beside
it (``../05_model_input/splits.npz``) must equal this script's split, or it refuses (a teacher
trained on another split may have seen these test images). The glyph data are generated once
into ``<out-dir>/cache/`` (never into ``data/``).
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
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
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

from kedro_edge import accuracy, config, data, evaluate, export, nodes, plots, robustness  # noqa: E402
from kedro_edge.io import GlyphsDataset, NpzDataset, TorchModuleDataset  # noqa: E402
from kedro_edge.models import import_class  # noqa: E402

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


@dataclass(frozen=True)
class Architecture:
    """A teacher architecture to benchmark: its ``parameters.model`` (None: as shipped)."""

    spec: dict[str, Any] | None
    note: str


ARCHITECTURES = {
    "residual": Architecture(None, "parameters.model as shipped"),
    "mobilenet": Architecture(
        {"class_path": "kedro_edge.models.MobileNetV2", "kwargs": {}}, "MobileNetV2 with its defaults"
    ),
}

FP32, FINAL = "fp32", "kedro_edge"
PEERS = ("ort_int8_only", "nncf_ptq", "nncf_accuracy_control", "tp_prune_only", "prune_ptq")

# The targets for the final model.
MIN_SPEEDUP = 8.0  # fp32 p50 / final p50
MIN_SIZE_REDUCTION = 12.0  # fp32 bytes / final bytes
MAX_ACCURACY_DROP = 1.0  # points of clean test accuracy below fp32 (point estimate)

# piped output (a log file) gets a width that fits the table instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() else 230)


@dataclass
class Candidate:
    """One benchmarked model: the ONNX graph that runs and the torch module it comes from.

    ``error`` is set (and the graph missing) when building it failed.
    """

    name: str
    description: str
    onnx_model: onnx.ModelProto | None = None
    module: nn.Module | None = None
    error: str | None = None
    details: dict[str, Any] | None = None


# --- setup ---------------------------------------------------------------------------------


def parse_models(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ARCHITECTURES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ARCHITECTURES)} (got {value!r})")
    return list(dict.fromkeys(names))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        "--model",
        dest="models",
        type=parse_models,
        default=["residual"],
        metavar="NAMES",
        help=f"comma-separated architectures: {', '.join(ARCHITECTURES)} (default residual)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1-epoch training on a training slice, short latency runs",
    )
    parser.add_argument(
        "--reuse-teacher",
        type=Path,
        metavar="PATH",
        help="a teacher .pt saved by TorchModuleDataset (for the architecture of its class)",
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
        help="where compression_<model>.json/.png (and the generated data cache) go",
    )
    args = parser.parse_args()
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.reuse_teacher is not None and not args.reuse_teacher.is_file():
        parser.error(f"--reuse-teacher: {args.reuse_teacher} not found")
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


def load_parameters(arch: Architecture, quick: bool) -> dict[str, Any]:
    """The shipped parameters with the architecture's model (and --quick's overrides), validated."""
    params: dict[str, Any] = {}
    for name in PARAMETER_FILES:
        params.update(yaml.safe_load((CONF / name).read_text()) or {})
    if arch.spec is not None:
        params["model"] = copy.deepcopy(arch.spec)
    for dotted, value in (QUICK_OVERRIDES if quick else {}).items():
        set_dotted(params, dotted, value)
    config.validate_parameters(params)
    return params


def raw_images(cache_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The catalog's ``raw_images`` (a GlyphsDataset), generated into ``cache_dir``, not data/."""
    catalog = yaml.safe_load((CONF / "catalog.yml").read_text())
    entry = dict(catalog["raw_images"])
    kind = entry.pop("type")
    if kind != "kedro_edge.io.GlyphsDataset":
        raise SystemExit(f"conf/base/catalog.yml: raw_images is {kind}; this benchmark expects GlyphsDataset")
    entry["filepath"] = str(cache_dir / "glyphs.npz")
    return GlyphsDataset(**entry).load(), {"type": kind, **entry}


def check_teacher_split(teacher_path: Path, model_input: dict[str, np.ndarray]) -> str:
    """Refuse a reused teacher unless the splits.npz its run wrote equals this split."""
    splits_path = teacher_path.resolve().parents[1] / "05_model_input" / "splits.npz"
    if not splits_path.is_file():
        raise SystemExit(
            f"--reuse-teacher: {splits_path} not found: cannot show the teacher's split is this one"
        )
    theirs = NpzDataset(str(splits_path)).load()
    for key, ours in model_input.items():
        if key not in theirs or not np.array_equal(theirs[key], ours):
            raise SystemExit(
                f"--reuse-teacher: {splits_path} differs from this benchmark's split in '{key}': "
                "the teacher may have trained on these test images"
            )
    return str(splits_path)


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


def reuses_teacher(reuse: Path | None, params: dict) -> bool:
    """Whether the --reuse-teacher file holds this architecture (its class is parameters.model's)."""
    if reuse is None:
        return False
    cls = import_class(params["model"]["class_path"], "model.class_path")
    return type(TorchModuleDataset(str(reuse)).load()) is cls


def attempt(candidate: Candidate, build: Callable[[], onnx.ModelProto]) -> Candidate:
    """Build a peer's ONNX model; a failure is recorded in its row instead of ending the run."""
    try:
        candidate.onnx_model = build()
    except Exception as exc:  # any failure of a peer's tool (NNCF above all) is a result too
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        candidate.error = f"{type(exc).__name__}: {first}"
        candidate.details = {**(candidate.details or {}), "traceback": traceback.format_exc()[-4000:]}
        console.print(f"[red]  {candidate.name} failed[/]: {candidate.error}")
    return candidate


def import_nncf():
    # openvino-telemetry sends usage events (and writes a consent folder in $HOME) unless it
    # sees CI; this sets it for this process only.
    os.environ["CI"] = "true"
    import nncf

    return nncf


def calibration_dataset(nncf, calib: np.ndarray):
    """The pipeline's calibration images, one per item (NNCF's statistics are per sample)."""
    return nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {export.INPUT: x})


def nncf_ptq(teacher_onnx: onnx.ModelProto, calib: np.ndarray) -> onnx.ModelProto:
    nncf = import_nncf()
    return nncf.quantize(
        copy.deepcopy(teacher_onnx), calibration_dataset(nncf, calib), subset_size=len(calib)
    )


class ValidationTop1:
    """NNCF's ``validation_fn``: top-1 of an ONNX model on (image, label) items, through ORT.

    Returns the accuracy and one 0/1 per item (NNCF then ranks quantizers per item). The
    session is kept while NNCF asks about the same model again (it validates one item at a time).
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._model: onnx.ModelProto | None = None
        self._session = None

    def __call__(self, model: onnx.ModelProto, items: Iterable[tuple[np.ndarray, int]]) -> tuple[float, list]:
        if model is not self._model:
            self._model, self._session = model, evaluate.session(model, threads=os.cpu_count() or 1)
        pairs = list(items)
        x = np.concatenate([image for image, _ in pairs])
        y = np.asarray([label for _, label in pairs])
        right = evaluate.ort_predict(self._session, x, self.batch_size).argmax(1) == y
        return float(right.mean()), [float(r) for r in right]


def nncf_accuracy_control(
    teacher_onnx: onnx.ModelProto, calib: np.ndarray, splits: data.Splits, max_drop_points: float, batch: int
) -> onnx.ModelProto:
    nncf = import_nncf()
    x_val, y_val = splits.x("val"), splits.y("val")
    validation = nncf.Dataset(
        [(x_val[i : i + 1], int(y_val[i])) for i in range(len(y_val))], lambda item: {export.INPUT: item[0]}
    )
    return nncf.quantize_with_accuracy_control(
        copy.deepcopy(teacher_onnx),
        calibration_dataset(nncf, calib),
        validation,
        ValidationTop1(batch),
        max_drop=max_drop_points / 100,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calib),
    )


def val_top1(model: onnx.ModelProto, splits: data.Splits, batch: int) -> float:
    sess = evaluate.session(model, threads=os.cpu_count() or 1)
    return float((evaluate.ort_predict(sess, splits.x("val"), batch).argmax(1) == splits.y("val")).mean())


def build_candidates(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    params: dict,
    timings: dict[str, float],
) -> tuple[list[Candidate], dict]:
    """fp32, the five single-technique peers and the pipeline's model; the prune report."""
    comp, train = params["compression"], params["training"]
    cfg = config.parse(config.CompressionParams, comp, "compression")
    gates = config.parse(config.ValidationParams, params["validation"], "validation").gates
    max_drop = gates.max_accuracy_drop if gates.max_accuracy_drop is not None else MAX_ACCURACY_DROP
    batch = params["validation"].get("batch_size", 256)
    splits = data.Splits(model_input)
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    with phase("export fp32 teacher", timings):
        teacher_onnx = nodes.export_teacher(teacher, model_input, comp)
    fp32 = Candidate(FP32, "FP32 teacher, ONNX", teacher_onnx, teacher)
    int8_only = Candidate("ort_int8_only", "ORT quantize_static (QDQ) of the teacher", module=teacher)
    with phase("ORT static INT8 of the teacher (ort_int8_only)", timings):
        attempt(int8_only, lambda: export.quantize_int8(teacher_onnx, calib, cfg.quantize))
    ptq = Candidate("nncf_ptq", "NNCF quantize of the teacher ONNX, defaults", module=teacher)
    with phase("NNCF post-training quantization (nncf_ptq)", timings):
        attempt(ptq, lambda: nncf_ptq(teacher_onnx, calib))
    control = Candidate(
        "nncf_accuracy_control",
        f"NNCF quantize_with_accuracy_control, max_drop {max_drop:g} pts on val",
        module=teacher,
        details={"max_drop_points": max_drop, "drop_type": "absolute", "metric": "top-1 on the val split"},
    )
    with phase("NNCF quantization with accuracy control (nncf_accuracy_control)", timings):
        attempt(control, lambda: nncf_accuracy_control(teacher_onnx, calib, splits, max_drop, batch))
        if control.onnx_model is not None:  # what NNCF saw: both models on the validation split
            control.details.update(
                fp32_val_top1=val_top1(teacher_onnx, splits, batch),
                quantized_val_top1=val_top1(control.onnx_model, splits, batch),
                val_n=len(splits.y("val")),
            )
    with phase("prune + fine-tune (tp_prune_only, and the pipeline's first stage)", timings):
        pruned, prune_report = nodes.prune_teacher(teacher, model_input, comp, train)
        pruned_onnx = export.to_onnx(pruned, splits.input_shape, cfg.export.opset)
    prune_ptq = Candidate("prune_ptq", "the pruned model + ORT quantize_static, no QAT/KD", module=pruned)
    with phase("ORT static INT8 of the pruned model (prune_ptq)", timings):
        attempt(prune_ptq, lambda: export.quantize_int8(pruned_onnx, calib, cfg.quantize))
    with phase("QAT + distillation + INT8 export (kedro_edge)", timings):
        qat = nodes.quantize_student(pruned, model_input, comp)
        student = nodes.distill_student(qat, teacher, model_input, comp, train)
        final_onnx = nodes.export_model(student, model_input, comp)
    candidates = [
        fp32,
        int8_only,
        ptq,
        control,
        Candidate("tp_prune_only", "Torch-Pruning + fine-tune, FP32 ONNX", pruned_onnx, pruned),
        prune_ptq,
        Candidate(FINAL, "prune -> QAT -> distill -> ORT INT8", final_onnx, student),
    ]
    return candidates, prune_report


# --- measurement ---------------------------------------------------------------------------


@dataclass
class Measured:
    figures: dict[str, Any]
    correct: np.ndarray
    robust_correct: np.ndarray | None


def measure(
    candidates: list[Candidate],
    splits: data.Splits,
    robust_x: np.ndarray | None,
    latency: config.LatencyParams,
    rounds: int,
    validation: config.ValidationParams,
) -> dict[str, Measured]:
    """Every built model: round 1 is ``evaluate_stage`` (accuracy, robust accuracy, footprint,
    latency), later rounds latency only, the order reversed every other round."""
    built = [c for c in candidates if c.onnx_model is not None]
    runs: dict[str, list[dict[str, float]]] = {c.name: [] for c in built}
    first: dict[str, evaluate.StageEvaluation] = {}
    samples = splits.x("test")[:64]  # what evaluate_stage times
    for r in range(rounds):
        for c in built if r % 2 == 0 else built[::-1]:
            if r == 0:
                ev = evaluate.evaluate_stage(
                    c.onnx_model,
                    c.module,
                    splits,
                    latency,
                    validation.batch_size,
                    robust_x,
                    validation.confidence,
                )
                first[c.name] = ev
                lat = {k: ev.figures[k] for k in ("latency_p50_ms", "latency_p90_ms", "latency_runs")}
            else:
                times = evaluate.latency_ms(evaluate.session(c.onnx_model, latency.threads), samples, latency)
                lat = {
                    "latency_p50_ms": float(np.percentile(times, 50)),
                    "latency_p90_ms": float(np.percentile(times, 90)),
                    "latency_runs": int(len(times)),
                }
            runs[c.name].append(lat)
            console.print(
                f"    round {r + 1}/{rounds}  {c.name:<22} p50 {lat['latency_p50_ms']:.3f} ms  "
                f"p90 {lat['latency_p90_ms']:.3f} ms  ({lat['latency_runs']} runs)"
            )
    return {
        c.name: Measured(
            combine_rounds(first[c.name].figures, runs[c.name]),
            first[c.name].correct,
            first[c.name].robust_correct,
        )
        for c in built
    }


def combine_rounds(figures: dict[str, Any], runs: list[dict[str, float]]) -> dict[str, Any]:
    """Round 1's accuracy/size/footprint (deterministic) and the rounds' median latency."""
    out = copy.deepcopy(figures)
    del out["latency_runs"]
    for key in ("latency_p50_ms", "latency_p90_ms"):
        per_round = [r[key] for r in runs]
        out[key] = statistics.median(per_round)
        out[f"{key}_rounds"] = per_round
    out["latency_runs_per_round"] = [r["latency_runs"] for r in runs]
    return out


def quantize_nodes(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "QuantizeLinear" for node in model.graph.node)


def paired(reference: np.ndarray | None, candidate: np.ndarray | None, cfg: config.ValidationParams):
    if reference is None or candidate is None:
        return None
    return accuracy.paired(reference, candidate, cfg.confidence, cfg.bootstrap_resamples).to_dict()


def assemble(
    candidates: list[Candidate], measured: dict[str, Measured], cfg: config.ValidationParams
) -> dict[str, dict[str, Any]]:
    """Each model's row: figures, paired change vs fp32 (clean, robust), size and p50 vs fp32."""
    ref = measured[FP32]
    models: dict[str, dict[str, Any]] = {}
    for c in candidates:
        row: dict[str, Any] = {"description": c.description}
        if c.details:
            row["details"] = c.details
        if c.name not in measured:
            models[c.name] = {**row, "error": c.error}
            continue
        m = measured[c.name]
        row.update(m.figures)
        row["quantize_linear_nodes"] = quantize_nodes(c.onnx_model)
        row["size_reduction"] = ref.figures["size_bytes"] / m.figures["size_bytes"]
        row["p50_ratio"] = m.figures["latency_p50_ms"] / ref.figures["latency_p50_ms"]
        row["p50_speedup"] = 1 / row["p50_ratio"]
        if c.name != FP32:
            row["vs_fp32"] = {
                "clean": paired(ref.correct, m.correct, cfg),
                "robust": paired(ref.robust_correct, m.robust_correct, cfg),
            }
        models[c.name] = row
    return models


def target(
    description: str, measured: Any, threshold: Any, passed: bool | None, summary: str
) -> dict[str, Any]:
    return {
        "description": description,
        "measured": measured,
        "threshold": threshold,
        "passed": None if passed is None else bool(passed),
        "summary": summary,
    }


def drop_text(comparison: dict[str, Any]) -> str:
    """A paired comparison as a drop: 'drop 0.15 pts [-0.15, +0.46], McNemar p=0.4'."""
    drop, low, high = (-comparison[k] + 0.0 for k in ("diff_points", "ci_high_points", "ci_low_points"))
    return f"drop {drop:.2f} pts [{low:+.2f}, {high:+.2f}], McNemar {p_text(comparison['p_value'])}"


def evaluate_targets(
    models: dict[str, dict[str, Any]], measured: dict[str, Measured], cfg: config.ValidationParams
) -> dict[str, dict[str, Any]]:
    """The targets for the final model, each with its measured values and pass/fail."""
    final = models[FINAL]
    clean, robust = final["vs_fp32"]["clean"], final["vs_fp32"]["robust"]
    drop = round(-clean["diff_points"], 9) + 0.0  # no float noise at the limit, no -0
    pct = round(100 * cfg.confidence)
    targets = {
        "p50_speedup_vs_fp32": target(
            f"final p50 latency at least {MIN_SPEEDUP:g}x lower than fp32",
            final["p50_speedup"],
            MIN_SPEEDUP,
            final["p50_speedup"] >= MIN_SPEEDUP,
            f"{final['p50_speedup']:.2f}x lower p50 ({models[FP32]['latency_p50_ms']:.3f} -> "
            f"{final['latency_p50_ms']:.3f} ms); needs >= {MIN_SPEEDUP:g}x",
        ),
        "size_reduction_vs_fp32": target(
            f"final ONNX file at least {MIN_SIZE_REDUCTION:g}x smaller than fp32",
            final["size_reduction"],
            MIN_SIZE_REDUCTION,
            final["size_reduction"] >= MIN_SIZE_REDUCTION,
            f"{final['size_reduction']:.2f}x smaller ({models[FP32]['size_bytes'] / 1024:,.0f} -> "
            f"{final['size_bytes'] / 1024:,.0f} KiB); needs >= {MIN_SIZE_REDUCTION:g}x",
        ),
        "accuracy_drop_vs_fp32": target(
            f"final clean test accuracy at most {MAX_ACCURACY_DROP:g} points below fp32 (point estimate)",
            {
                "drop_points": drop,
                "drop_ci_points": [-clean["ci_high_points"] + 0.0, -clean["ci_low_points"] + 0.0],
                "mcnemar_p": clean["p_value"],
                "robust_drop_points": None if robust is None else -robust["diff_points"] + 0.0,
                "robust_drop_ci_points": None
                if robust is None
                else [-robust["ci_high_points"] + 0.0, -robust["ci_low_points"] + 0.0],
            },
            MAX_ACCURACY_DROP,
            drop <= MAX_ACCURACY_DROP,
            f"clean {drop_text(clean)} (paired {pct}% CI, n={clean['n']:,}); needs point <= "
            f"{MAX_ACCURACY_DROP:g}; robust {drop_text(robust) if robust else 'not measured'}",
        ),
    }
    for name in PEERS:
        peer = models[name]
        if "error" in peer:
            targets[f"beats_{name}"] = target(
                f"faster than {name} unless more accurate", None, None, None, f"not built: {peer['error']}"
            )
            continue
        vs = paired(measured[FINAL].correct, measured[name].correct, cfg)  # peer - ours
        more_accurate = vs["ci_low_points"] > 0
        p50_ratio = peer["latency_p50_ms"] / final["latency_p50_ms"]
        targets[f"beats_{name}"] = target(
            f"final p50 lower than {name}'s, unless {name} is more accurate "
            "(paired CI of peer - final entirely above 0)",
            {
                "peer_p50_over_final": p50_ratio,
                "peer_minus_final_points": vs["diff_points"],
                "ci_points": [vs["ci_low_points"], vs["ci_high_points"]],
                "mcnemar_p": vs["p_value"],
                "peer_more_accurate": more_accurate,
            },
            {"peer_p50_over_final": "> 1", "peer_more_accurate": False},
            p50_ratio > 1 and not more_accurate,
            f"{name} p50 {peer['latency_p50_ms']:.3f} ms = {p50_ratio:.2f}x final's; {name} - final "
            f"{vs['diff_points']:+.2f} pts [{vs['ci_low_points']:+.2f}, {vs['ci_high_points']:+.2f}] "
            f"{p_text(vs['p_value'])}: {'MORE accurate' if more_accurate else 'not more accurate'}",
        )
    return targets


def machine() -> dict[str, Any]:
    packages = ("onnxruntime", "torch", "onnx", "torch-pruning", "nncf", "numpy", "kedro-edge")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "versions": {pkg: installed_version(pkg) for pkg in packages},
    }


def installed_version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


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


def pct_ci(value: float, ci: list[float]) -> str:
    return f"{100 * value:.2f} [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def p_text(p: float) -> str:
    return "p<1e-4" if p < 1e-4 else f"p={p:.2g}"


def diff_ci(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "—"
    return (
        f"{comparison['diff_points']:+.2f} [{comparison['ci_low_points']:+.2f}, "
        f"{comparison['ci_high_points']:+.2f}] {p_text(comparison['p_value'])}"
    )


def results_table(models: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    columns = (
        "model",
        "n",
        "clean % [95% CI]",
        "robust % [95% CI]",
        "Δ clean vs fp32 pts [CI] p",
        "Δ robust vs fp32 pts [CI] p",
        "KiB",
        "smaller ×",
        "params",
        "MACs",
        "p50 ms",
        "p90 ms",
        "p50 ÷ fp32",
    )
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    failures: list[str] = []
    for name, f in models.items():
        if "error" in f:
            table.add_row(name, "[red]failed[/]", *[""] * (len(columns) - 2))
            failures.append(f"[red]{name} failed:[/] {f['error']}")
            continue
        vs = f.get("vs_fp32", {})
        table.add_row(
            name,
            f"{f['n']:,}",
            pct_ci(f["accuracy"], f["accuracy_ci"]),
            pct_ci(f["robust_accuracy"], f["robust_accuracy_ci"]) if "robust_accuracy" in f else "—",
            diff_ci(vs.get("clean")) if vs else "(reference)",
            diff_ci(vs.get("robust")) if vs else "(reference)",
            f"{f['size_bytes'] / 1024:,.1f}",
            f"{f['size_reduction']:.1f}",
            f"{f['params']:,}",
            f"{f['macs']:,}",
            f"{f['latency_p50_ms']:.3f}",
            f"{f['latency_p90_ms']:.3f}",
            f"{f['p50_ratio']:.3f}",
        )
    if failures:
        table.caption, table.caption_justify = "\n".join(failures), "left"
    return table


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    console.print(f"[bold]Targets (final model, {FINAL}):")
    for name, t in targets.items():
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}[t["passed"]]
        console.print(f"  {mark}  {name}: {t['summary']}")
    judged = [t for t in targets.values() if t["passed"] is not None]
    passed = sum(t["passed"] for t in judged)
    console.print(f"[bold]{passed}/{len(judged)} targets passed ({len(targets) - len(judged)} not measured).")


def print_nncf_control(models: dict[str, dict[str, Any]]) -> None:
    """What NNCF's accuracy control saw on the validation split (the test split stays unseen)."""
    row = models.get("nncf_accuracy_control", {})
    d = row.get("details", {})
    if "quantized_val_top1" in d:
        console.print(
            f"nncf_accuracy_control on val (n={d['val_n']:,}): fp32 top-1 {100 * d['fp32_val_top1']:.2f}% -> "
            f"{100 * d['quantized_val_top1']:.2f}% (allowed drop {d['max_drop_points']:g} pts); "
            f"{row['quantize_linear_nodes']} QuantizeLinear nodes vs nncf_ptq's "
            f"{models['nncf_ptq'].get('quantize_linear_nodes', '?')}"
        )


def save_plot(
    models: dict[str, dict[str, Any]], arch: str, test_n: int, confidence: float, path: Path
) -> None:
    """The pipeline's figure (``plots.compression_figure``) for the measured models, plus targets."""
    stages = {}
    for name, f in models.items():
        if "error" not in f:
            stages[name] = {**f, **({"vs_teacher": f["vs_fp32"]} if "vs_fp32" in f else {})}
    fig = plots.compression_figure({"stages": stages, "test_n": test_n, "confidence": confidence})
    ax = fig.axes[0]
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(stages)))  # as compression_figure
    for color, f in zip(colors, stages.values(), strict=True):
        if "robust_accuracy_ci" in f:  # the robust points get their interval too
            low, high = (100 * v for v in f["robust_accuracy_ci"])
            robust = 100 * f["robust_accuracy"]
            ax.errorbar(
                f["latency_p50_ms"],
                robust,
                yerr=[[robust - low], [high - robust]],
                fmt="none",
                ecolor=color,
                capsize=3,
                lw=0.8,
            )
    ref = stages[FP32]
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
    low, high = ax.get_xlim()  # keep the target line in view even when no model is near it
    ax.set_xlim(min(low, ref["latency_p50_ms"] / MIN_SPEEDUP / 1.3), high)
    ax.set_title(f"{arch}: accuracy vs p50, 1 thread (hollow: robust; area ~ size)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, frameon=False)
    fig.axes[1].set_title(f"paired change vs fp32, same {test_n:,} test images")
    fig.axes[1].set_ylabel("accuracy change vs fp32 (points)")
    for other in fig.axes[1:]:
        other.tick_params(axis="x", labelrotation=30)
        for label in other.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def write_results(out_dir: Path, arch: str, report: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"compression_{arch}.json", out_dir / f"compression_{arch}.png"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    settings = report["settings"]
    save_plot(report["models"], arch, settings["samples"]["test"], settings["confidence"], png_path)
    console.print(f"Wrote {json_path} and {png_path}")


# --- main ----------------------------------------------------------------------------------


def run_architecture(
    arch_name: str, args: argparse.Namespace, model_input: dict[str, np.ndarray], data_info: dict
) -> None:
    arch = ARCHITECTURES[arch_name]
    seed_everything()
    params = load_parameters(arch, args.quick)
    latency = QUICK_LATENCY if args.quick else LATENCY
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    validation = config.parse(config.ValidationParams, params["validation"], "validation")
    timings: dict[str, float] = {}
    console.rule(f"[bold]{arch_name}: {params['model']['class_path']}")
    splits = data.Splits(model_input)
    reuse = args.reuse_teacher if reuses_teacher(args.reuse_teacher, params) else None
    if args.reuse_teacher is not None and reuse is None:
        console.print(f"[yellow]{args.reuse_teacher} is not a {arch_name} teacher: training one")
    with phase(f"load teacher {reuse}" if reuse else "train teacher", timings):
        teacher = get_teacher(model_input, params, reuse)
    candidates, prune_report = build_candidates(teacher, model_input, params, timings)
    robust_x = (
        robustness.perturbed_copy(splits.x("test"), validation.robustness)
        if validation.robustness.enabled
        else None
    )
    with phase(f"measure {len(candidates)} models x {rounds} interleaved rounds", timings):
        measured = measure(candidates, splits, robust_x, latency, rounds, validation)
    models = assemble(candidates, measured, validation)
    targets = evaluate_targets(models, measured, validation)

    n = len(splits.y("test"))
    perturbed = ", ".join(validation.robustness.perturbations) if robust_x is not None else "off"
    console.print(
        results_table(
            models,
            f"{arch_name}: test n={n:,} clean and perturbed ({perturbed}), "
            f"{round(100 * validation.confidence)}% intervals, paired vs fp32; ONNX Runtime, batch 1, "
            f"{latency.threads} thread, median of {rounds} rounds",
        )
    )
    print_nncf_control(models)
    print_targets(targets)
    report = {
        "benchmark": "compression",
        "architecture": arch_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "settings": {
            "model": params["model"],
            "architecture_note": arch.note,
            "data": data_info,
            "latency": latency.model_dump(),
            "rounds": rounds,
            "batch_size": validation.batch_size,
            "confidence": validation.confidence,
            "robustness": validation.robustness.model_dump() if validation.robustness.enabled else None,
            "samples": {split: len(splits.y(split)) for split in data.SPLITS},
            "seed": SEED,
            "teacher": {"source": str(reuse)} if reuse else {"source": "trained with parameters.training"},
            "torch_threads": torch.get_num_threads(),
        },
        "parameters": params,
        "models": models,
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets.values() if t["passed"] is not None),
        "prune_report": prune_report,
        "phase_seconds": timings,
    }
    write_results(args.out_dir, arch_name, report)


def main() -> int:
    args = parse_args()
    timings: dict[str, float] = {}
    if args.quick:
        console.print("[yellow]--quick: smoke test, the figures below mean nothing")
    with phase("load + split data", timings):
        params = load_parameters(ARCHITECTURES["residual"], args.quick)
        raw, data_info = raw_images(args.out_dir / "cache")
        model_input = nodes.split_dataset(raw, params["data"])
        if args.reuse_teacher is not None:
            data_info["teacher_split_checked_against"] = check_teacher_split(args.reuse_teacher, model_input)
        if args.quick:
            model_input = shrink_train(model_input, QUICK_TRAIN_SAMPLES)
    for arch_name in args.models:
        run_architecture(arch_name, args, model_input, data_info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
