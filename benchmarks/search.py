"""Benchmark: the budgeted search (issue 11) against the fixed recipe and two peers, per target.

Trains (or loads) an FP32 teacher on the default task (the generated glyphs of
``conf/base/catalog.yml``'s ``raw_images``, split with ``parameters.data``), then, all at one
accuracy budget (``compression.search.budget.max_accuracy_drop``, 1.0 point as shipped; ``--budget``):

- ``searched@host``          ``kedro_edge.search.driver.search`` with ``target: host`` (its own study, a fresh
                             journal file in ``<out-dir>/search_studies/``), then the compression
                             pipeline's nodes on the chosen trial's recipe (``record["chosen"]["recipe"]``):
                             low-rank -> prune -> QAT -> distill -> cluster -> ``export_model``;
- ``searched@<group>``       the same with ``target`` the group of a loopback device: a real OpenSSH
                             ``sshd`` on 127.0.0.x started by ``kedro_edge.testing.start_fleet`` (one
                             device, ``edge1``; its devices.yml group, ``loopback``, is the target);
- ``fixed_recipe``           the same nodes with the shipped ``compression`` parameters (today's
                             defaults), built once;
- ``nncf_accuracy_control``  ``nncf.quantize_with_accuracy_control`` on the teacher's ONNX, allowed the
                             budget (absolute), its metric top-1 on the VALIDATION split;
- ``tp_int8``                Torch-Pruning (``compress.prune.prune``) at one uniform ratio for every
                             layer, with the pipeline's schedule (``compression.prune``: 3 steps, 2
                             fine-tune epochs), then plain ORT static INT8 (``ptq.quantize_int8``, no
                             float layers). Ratios are tried from the largest of ``TP_RATIOS`` down;
                             the first whose INT8 model's VALIDATION accuracy is within the budget of
                             the teacher's is the largest such ratio, and the one reported.

Every choice (the search's trials, the TP ratio, NNCF's accuracy control) sees the validation split
only; the test split is only reported. ``fp32`` is the teacher's ONNX, the reference.

Every final model is then timed on each target in ONE batch (``fleet.measure.measure_on_host`` /
``measure_on_device``): each model interleaved with the FP32 teacher's ONNX in A B / B A blocks on
the validation images the search times with, so every ratio is vs FP32 on that target and drift
cancels. Columns per target: the model; its test accuracy with the Wilson interval and n; the
paired drop vs FP32 on the same test images (points, positive: worse; paired-bootstrap interval);
within budget (the drop's point estimate <= the budget); p50 ratio vs FP32 on that target (the
median of the blocks' ratios) and its p50 in ms; speed-up vs the fixed recipe (the fixed recipe's
ratio / the model's, both from the same batch); ONNX KiB; shipped KiB (lzma,
``kedro_edge.runtimes.codec.shipped_size``, as a release sends it). Both searched models appear in both
tables (a model searched for one target, run on the other, shows what targeting buys).

Targets, per target, for the model searched on it: p50 at least 1.3x lower than the fixed recipe's
with test accuracy within the budget (point estimate); and faster than every peer (fixed recipe,
NNCF, Torch-Pruning) whose test accuracy is within the budget. A model that fails to build (NNCF
above all, or a search with no candidate within budget) is recorded with its error and the run
goes on; a target it would decide is then not judged.

Writes ``<out-dir>/search.json`` (settings, both search records with every trial, each model's
recipe and reports, the raw measurements, the rows, the verdicts), ``search.png`` (p50 ratio vs
test accuracy per target, with the budget line), ``search_front_<target>.png`` (each search's own
Pareto plot) and the final ONNX files in ``<out-dir>/search_models/``. Exits 0 whether or not the
targets pass (it is a measurement, not a test). Run from the project root:

    .venv/bin/python benchmarks/search.py [--quick] [--reuse-teacher data/06_models/teacher.pt]
        [--targets host,device] [--trials N] [--time-budget S] [--budget POINTS] [--out-dir DIR]

``--quick`` is a smoke test (~3.5 min on the 2 busy cores here, most of it the fixed recipe's and the
searched recipe's pipeline runs): every training stage one epoch on 384 training images, 500
validation and 1,000 test images, searches of 3 trials in batches of 2 with 1 fine-tune epoch, Torch-
Pruning ratios 0.5 and 0.3 only, short latency runs, and a budget of 100 points unless ``--budget``
sets one (after such a fine-tune no candidate stays within 1 point, and every path, a chosen trial
through the pipeline included, should run). Its figures mean nothing. ``--reuse-teacher`` loads a
teacher saved by ``kedro_edge.io.TorchModuleDataset``; the ``splits.npz`` its run wrote beside it
must equal this split, or it refuses. The glyph data are generated once into ``<out-dir>/cache/``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

from kedro_edge import config, data, nodes  # noqa: E402
from kedro_edge.compress import (
    prune,  # noqa: E402
    ptq,
)
from kedro_edge.evaluation import statistics
from kedro_edge.fleet.inventory import Fleet, load_fleet  # noqa: E402
from kedro_edge.fleet.measure import MeasureOptions, measure_on_device, measure_on_host  # noqa: E402
from kedro_edge.runtimes import onnx_export
from kedro_edge.runtimes import onnxruntime as ort_host
from kedro_edge.runtimes.codec import shipped_size  # noqa: E402
from kedro_edge.search import record  # noqa: E402
from kedro_edge.search.driver import VAL_INPUTS, search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compression as cb  # noqa: E402

console = cb.console
FP32, FIXED, NNCF, TP = "fp32", "fixed_recipe", "nncf_accuracy_control", "tp_int8"
PEERS = (FIXED, NNCF, TP)
TARGETS = ("host", "device")
DEVICE_NAME = "edge1"
# a batch of final models timed on the device can take minutes; start_fleet writes 60 s
DEVICE_COMMAND_TIMEOUT = 1800.0

TP_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
QUICK_TP_RATIOS = (0.3, 0.5)
MIN_SPEEDUP_VS_FIXED = 1.3

# The final models' timing: stricter than the search's (compression.search.latency).
FINAL_LATENCY = MeasureOptions(blocks=10, threads=1, warmup=50, min_runs=400, min_seconds=3.0)
QUICK_FINAL_LATENCY = MeasureOptions(blocks=2, threads=1, warmup=5, min_runs=20, min_seconds=0.0)
# --quick: compression.search overrides on top of compression.QUICK_OVERRIDES (one epoch each)
QUICK_SEARCH = {
    "trials": 3,
    "batch": 2,
    "finetune_epochs": 1,
    "latency": {"blocks": 2, "warmup": 2, "min_runs": 10, "min_seconds": 0.0},
}
# --quick: after a 1-epoch fine-tune on 384 images no candidate stays within 1 point, so the budget is
# loose unless --budget says otherwise: every path (a chosen trial through the pipeline) then runs
QUICK_BUDGET = 100.0
QUICK_VAL_SAMPLES, QUICK_TEST_SAMPLES = 500, 1000


@dataclass
class Model:
    """One final model: its INT8 (or FP32) ONNX bytes, or the error that stopped its build."""

    name: str
    description: str
    onnx: bytes | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


# --- setup ---------------------------------------------------------------------------------


def parse_targets(value: str) -> list[str]:
    """``host,device`` -> ["host", "device"]: which targets to search for and measure on."""
    names = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not names or any(n not in TARGETS for n in names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(TARGETS)} (got {value!r})")
    return names


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny training, 3 trials")
    parser.add_argument(
        "--reuse-teacher",
        type=Path,
        metavar="PATH",
        help="a residual teacher .pt saved by TorchModuleDataset",
    )
    parser.add_argument(
        "--targets",
        type=parse_targets,
        default=list(TARGETS),
        metavar="NAMES",
        help="host,device (default both)",
    )
    parser.add_argument("--trials", type=int, help="trials per search (default conf/base's; 3 with --quick)")
    parser.add_argument(
        "--time-budget", type=float, metavar="S", help="seconds per search (default conf/base's)"
    )
    parser.add_argument(
        "--budget", type=float, metavar="POINTS", help="accuracy budget (default conf/base's)"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "benchmarks" / "results", help="where search.json/.png go"
    )
    args = parser.parse_args()
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be positive")
    if args.budget is not None and args.budget < 0:
        parser.error("--budget must be at least 0")
    if args.reuse_teacher is not None and not args.reuse_teacher.is_file():
        parser.error(f"--reuse-teacher: {args.reuse_teacher} not found")
    return args


def load_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The shipped parameters (and --quick's overrides) with the command line's search settings."""
    params = cb.load_parameters(cb.ARCHITECTURES["residual"], args.quick)
    search_section = params["compression"].setdefault("search", {})
    if args.quick:
        for key, value in QUICK_SEARCH.items():
            search_section[key] = (
                {**search_section.get(key, {}), **value} if isinstance(value, dict) else value
            )
    for key, value in (("trials", args.trials), ("time_budget_s", args.time_budget)):
        if value is not None:
            search_section[key] = value
    budget = args.budget if args.budget is not None else QUICK_BUDGET if args.quick else None
    if budget is not None:
        search_section["budget"] = {**search_section.get("budget", {}), "max_accuracy_drop": budget}
    config.validate_parameters(params)
    return params


def load_data(args: argparse.Namespace, params: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The default task's split (generated into ``<out-dir>/cache``); --quick: a slice of each split."""
    raw, data_info = cb.raw_images(args.out_dir / "cache")
    split = nodes.split_dataset(raw, params["data"])
    if args.reuse_teacher is not None:
        data_info["teacher_split_checked_against"] = cb.check_teacher_split(args.reuse_teacher, split)
    model_input = data.Splits(split).in_memory().arrays
    if args.quick:
        model_input = cb.shrink_train(model_input, cb.QUICK_TRAIN_SAMPLES)
        for split, n in (("val", QUICK_VAL_SAMPLES), ("test", QUICK_TEST_SAMPLES)):
            model_input[f"x_{split}"], model_input[f"y_{split}"] = (
                model_input[f"x_{split}"][:n],
                model_input[f"y_{split}"][:n],
            )
    return model_input, data_info


def load_teacher(args: argparse.Namespace, model_input: dict[str, np.ndarray], params: dict) -> nn.Module:
    """The --reuse-teacher file if it holds the shipped architecture, else a teacher trained here."""
    reuse = args.reuse_teacher if cb.reuses_teacher(args.reuse_teacher, params) else None
    if args.reuse_teacher is not None and reuse is None:
        console.print(f"[yellow]{args.reuse_teacher} is not a {params['model']['class_path']}: training one")
    cb.seed_everything()
    return cb.get_teacher(model_input, params, reuse)


def start_device(stack: ExitStack) -> tuple[Fleet, str]:
    """A loopback device (real sshd, stopped when ``stack`` closes) and its group, the search target.

    The fleet's devices get a longer ``command_timeout``: it bounds a whole batch of models timed on
    the device, and the final batch holds every model at the stricter ``FINAL_LATENCY``."""
    from kedro_edge.testing import start_fleet

    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kedro-edge-search-bench-")))
    running = stack.enter_context(start_fleet(root, [DEVICE_NAME], port=0))
    fleet = load_fleet(running.devices_yml)
    devices = [d.model_copy(update={"command_timeout": DEVICE_COMMAND_TIMEOUT}) for d in fleet.devices]
    fleet = fleet.model_copy(update={"devices": devices})
    return fleet, fleet.select([DEVICE_NAME])[0].group


# --- models --------------------------------------------------------------------------------


def attempt(model: Model, build: Callable[[], tuple[bytes, dict[str, Any]]]) -> Model:
    """Build ``model`` (ONNX bytes and details); a failure is recorded in it instead of ending the run."""
    start = time.perf_counter()
    try:
        model.onnx, details = build()
        model.details.update(details)
    except Exception as exc:  # a peer's tool failing (NNCF above all) is a result too
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        model.error = f"{type(exc).__name__}: {first}"
        model.details["traceback"] = traceback.format_exc()[-4000:]
        console.print(f"[red]  {model.name} failed[/]: {model.error}")
    model.details["build_seconds"] = round(time.perf_counter() - start, 1)
    return model


def pipeline_model(
    teacher: nn.Module, model_input: dict[str, np.ndarray], params: dict, compression: dict
) -> tuple[bytes, dict[str, Any]]:
    """The compression pipeline's nodes in their order with ``compression`` as the plan (as
    ``plan_compression`` hands it on): its model.onnx and the nodes' reports."""
    planned = copy.deepcopy(params)
    planned["compression"] = copy.deepcopy(compression)
    config.validate_parameters(planned)
    cb.seed_everything()
    built, _ = cb.pipeline_run(teacher, model_input, planned)
    return built.onnx_model.SerializeToString(), {"recipe": compression, **built.details}


def searched_model(
    target: str,
    search_record: dict[str, Any],
    teacher: nn.Module,
    model_input: dict,
    params: dict,
    built: dict[str, tuple[bytes, dict[str, Any]]],
) -> Model:
    """The pipeline run on the recipe the search for ``target`` chose (an error if none was chosen).

    ``built``: pipeline runs by recipe; a recipe another search chose too is run once (the nodes are
    seeded, so a second run would give the same bytes)."""
    model = Model(f"searched@{target}", f"the search's choice on {target}, through the pipeline")

    def build() -> tuple[bytes, dict[str, Any]]:
        chosen = search_record.get("chosen")
        if chosen is None:
            raise RuntimeError(f"the search on {target}: {search_record['outcome']}")
        # the recipe's own search section (target, storage) changes no node's output
        key = json.dumps({k: v for k, v in chosen["recipe"].items() if k != "search"}, sort_keys=True)
        if key not in built:
            built[key] = pipeline_model(teacher, model_input, params, chosen["recipe"])
        else:
            console.print("    the same recipe as an earlier search's: its model is reused")
        graph, details = built[key]
        trial = {k: chosen[k] for k in ("trial", "settings", "val_drop_points", "latency")}
        return graph, {"search_trial": trial, **details}

    return attempt(model, build)


def nncf_model(teacher_onnx: onnx.ModelProto, splits: data.Splits, params: dict, budget: float) -> Model:
    """NNCF's accuracy-controlled quantization of the teacher, allowed ``budget`` points on val."""
    cfg = config.parse(config.CompressionParams, params["compression"], "compression")
    batch = params["validation"].get("batch_size", 256)
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    model = Model(NNCF, f"NNCF quantize_with_accuracy_control, max_drop {budget:g} pts (absolute) on val")

    def build() -> tuple[bytes, dict[str, Any]]:
        quantized = cb.nncf_accuracy_control(teacher_onnx, calib, splits, budget, batch)
        seen = {
            "fp32_val_top1": cb.val_top1(teacher_onnx, splits, batch),
            "quantized_val_top1": cb.val_top1(quantized, splits, batch),
            "val_n": len(splits.y("val")),
            "max_drop_points": budget,
        }
        return quantized.SerializeToString(), seen

    return attempt(model, build)


def tp_candidate(
    teacher: nn.Module,
    splits: data.Splits,
    cfg: config.CompressionParams,
    train: config.TrainParams,
    ratio: float,
) -> tuple[bytes, dict[str, Any]]:
    """Torch-Pruning at one uniform ``ratio`` with the pipeline's schedule, then plain ORT INT8."""
    prune_cfg = cfg.prune.model_copy(
        update={
            "enabled": True,
            "method": "structured",
            "ratio": ratio,
            "target_macs": None,
            "layer_ratios": {},
        }
    )
    cb.seed_everything()
    pruned, report = prune.prune(teacher, splits, prune_cfg, train)
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    plain = cfg.quantize.model_copy(update={"enabled": True, "exclude": []})
    fp32 = onnx_export.to_onnx(pruned, splits.input_shape, cfg.export.opset)
    return ptq.quantize_int8(fp32, calib, plain).SerializeToString(), report


def tp_model(
    teacher: nn.Module,
    teacher_onnx: onnx.ModelProto,
    splits: data.Splits,
    params: dict,
    budget: float,
    ratios: tuple[float, ...],
) -> Model:
    """The Torch-Pruning peer: the largest of ``ratios`` whose INT8 model is within ``budget`` of the
    teacher on val (tried from the largest down, so the first that is within is the one); if none
    is, the smallest ratio, flagged."""
    cfg = config.parse(config.CompressionParams, params["compression"], "compression")
    train = config.parse(config.TrainParams, params["training"], "training")
    batch = params["validation"].get("batch_size", 256)
    model = Model(TP, "Torch-Pruning, one ratio for all layers, pipeline schedule + ORT INT8")

    def build() -> tuple[bytes, dict[str, Any]]:
        teacher_val = cb.val_top1(teacher_onnx, splits, batch)
        tried, best = [], None
        for ratio in sorted(ratios, reverse=True):
            graph, report = tp_candidate(teacher, splits, cfg, train, ratio)
            val = cb.val_top1(onnx.load_from_string(graph), splits, batch)
            drop = 100 * (teacher_val - val)
            tried.append(
                {"ratio": ratio, "val_top1": val, "val_drop_points": drop, "macs": report["after"]["macs"]}
            )
            console.print(f"    tp ratio {ratio:g}: val drop {drop:+.2f} pts (budget {budget:g})")
            best = (ratio, graph, report)
            if drop <= budget:
                break
        ratio, graph, report = best
        within = tried[-1]["val_drop_points"] <= budget
        if not within:
            console.print(f"[yellow]    no ratio within budget on val: reporting the smallest, {ratio:g}")
        model.description = (
            f"Torch-Pruning r={ratio:g} (one ratio for all layers) + pipeline schedule + ORT INT8"
        )
        details = {"ratio": ratio, "within_budget_on_val": within, "teacher_val_top1": teacher_val}
        return graph, {**details, "tried": tried, "prune_report": report}

    return attempt(model, build)


# --- searches ------------------------------------------------------------------------------


def search_config(params: dict, target: str, storage: Path) -> config.CompressionParams:
    """``compression`` as the pipeline parses it, the search pointed at ``target`` and a fresh journal."""
    comp = copy.deepcopy(params["compression"])
    comp["search"] = {
        **comp.get("search", {}),
        "enabled": True,
        "target": target,
        "storage": f"journal:{storage}",
    }
    return config.parse(config.CompressionParams, comp, "compression")


def run_search(
    teacher: nn.Module,
    splits: data.Splits,
    params: dict,
    target: str,
    fleet: Fleet | None,
    out_dir: Path,
    stamp: str,
) -> dict[str, Any]:
    """One study on ``target`` (a fresh journal file per run) and its record; its own plot is saved."""
    cfg = search_config(params, target, out_dir / "search_studies" / f"{stamp}-{target}.journal")
    train = config.parse(config.TrainParams, params["training"], "training")
    cb.seed_everything()
    result = search(teacher, splits, cfg, train, fleet)
    chosen = result.get("chosen")
    console.print(
        f"    {target}: {result['outcome']}"
        + (
            f", trial #{chosen['trial']} at {chosen['latency']['ratio']:.3f}x FP32 on the target"
            if chosen
            else ""
        )
    )
    record.figure(result).savefig(out_dir / f"search_front_{target}.png", dpi=110)
    return result


# --- measurement ---------------------------------------------------------------------------


def correct_on(graph: bytes, splits: data.Splits, split: str, batch: int) -> np.ndarray:
    """Per-image top-1 correctness of an ONNX graph on ``split`` (through ONNX Runtime)."""
    sess = ort_host.session(graph, threads=os.cpu_count() or 1)
    return ort_host.ort_predict(sess, splits.x(split), batch).argmax(1) == splits.y(split)


def write_models(models: list[Model], folder: Path) -> dict[str, Path]:
    """The built models as ONNX files (what the targets are sent), by name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m in models:
        if m.onnx is not None:
            paths[m.name] = folder / f"{m.name.replace('@', '_at_')}.onnx"
            paths[m.name].write_bytes(m.onnx)
    return paths


def measure_target(
    target: str, fleet: Fleet | None, paths: dict[str, Path], inputs: np.ndarray, options: MeasureOptions
) -> dict[str, Any]:
    """Every model against the FP32 reference on ``target``, in one batch: figures by model name."""
    reference, candidates = paths[FP32], [p for name, p in paths.items() if name != FP32]
    if target == "host":
        answer = measure_on_host(reference, candidates, inputs, options)
    else:
        device = fleet.select([DEVICE_NAME])[0]
        answer = measure_on_device(device, Path(fleet.root), reference, candidates, inputs, options)
    by_name = {}
    for name, path in paths.items():
        if name == FP32:
            continue
        figure = answer["results"][hashlib.sha256(path.read_bytes()).hexdigest()]
        by_name[name] = {k: figure[k] for k in ("ratio", "p50_ms", "reference_p50_ms", "block_ratios")}
    ref_p50 = float(np.median([f["reference_p50_ms"] for f in by_name.values()])) if by_name else None
    by_name[FP32] = {"ratio": 1.0, "p50_ms": ref_p50, "reference_p50_ms": ref_p50, "block_ratios": []}
    return {
        "where": answer["where"],
        "facts": answer["facts"],
        "sent_bytes": answer["sent_bytes"],
        "models": by_name,
    }


def test_figures(
    models: list[Model], splits: data.Splits, cfg: config.ValidationParams
) -> dict[str, dict[str, Any]]:
    """Each built model's test accuracy (Wilson) and its paired change vs FP32 on the same images."""
    batch = cfg.batch_size
    correct = {m.name: correct_on(m.onnx, splits, "test", batch) for m in models if m.onnx is not None}
    out = {}
    for name, right in correct.items():
        figures = {"accuracy": statistics.accuracy(right, cfg.confidence).to_dict()}
        if name != FP32:
            vs = statistics.paired(correct[FP32], right, cfg.confidence, cfg.bootstrap_resamples).to_dict()
            figures.update(vs_fp32=vs, **cb.drop_figures(vs, None))
        out[name] = figures
    return out


def target_rows(
    models: list[Model], tests: dict[str, dict], measured: dict[str, Any], budget: float
) -> dict[str, dict[str, Any]]:
    """One row per model for one target: accuracy, drop, within budget, p50 ratio, speed-up, bytes."""
    figures = measured.get("models", {})
    fixed = figures.get(FIXED)
    rows = {}
    for m in models:
        if m.onnx is None:
            rows[m.name] = {"description": m.description, "error": m.error}
            continue
        t, f = tests[m.name], figures.get(m.name)
        drop = t.get("drop_points", 0.0)
        rows[m.name] = {
            "description": m.description,
            "test_accuracy": t["accuracy"],
            "drop_points": drop,
            "drop_ci_points": t.get("drop_ci_points"),
            "mcnemar_p": t.get("mcnemar_p"),
            "within_budget": drop <= budget,
            "p50_ratio": f["ratio"] if f else None,
            "p50_ms": f["p50_ms"] if f else None,
            "speedup_vs_fixed": fixed["ratio"] / f["ratio"] if f and fixed else None,
            "onnx_bytes": len(m.onnx),
            "shipped_bytes": shipped_size(m.onnx),
        }
    return rows


# --- verdicts ------------------------------------------------------------------------------


def verdicts(target: str, rows: dict[str, dict[str, Any]], budget: float) -> dict[str, dict[str, Any]]:
    """For the model searched on ``target``: >= 1.3x faster than the fixed recipe within budget, and
    faster than every peer within budget. ``passed`` None: a model it needs was not built or timed."""
    ours = rows.get(f"searched@{target}", {})
    fixed = rows.get(FIXED, {})
    out = {}
    if ours.get("p50_ratio") is None or fixed.get("p50_ratio") is None:
        why = ours.get("error") or fixed.get("error") or "not measured"
        out["vs_fixed_recipe"] = {"passed": None, "summary": f"not judged: {why}"}
    else:
        speedup = ours["speedup_vs_fixed"]
        out["vs_fixed_recipe"] = {
            "passed": speedup >= MIN_SPEEDUP_VS_FIXED and ours["within_budget"],
            "speedup": speedup,
            "drop_points": ours["drop_points"],
            "summary": f"{speedup:.2f}x faster than the fixed recipe (needs >= {MIN_SPEEDUP_VS_FIXED:g}x), "
            f"test drop {ours['drop_points']:+.2f} pts (needs <= {budget:g})",
        }
    if ours.get("p50_ratio") is None:
        out["vs_peers"] = {"passed": None, "summary": f"not judged: {ours.get('error') or 'not measured'}"}
        return out
    within = {n: rows[n] for n in PEERS if rows.get(n, {}).get("within_budget") and rows[n].get("p50_ratio")}
    slower_than = [n for n, r in within.items() if r["p50_ratio"] <= ours["p50_ratio"]]
    out_of = [n for n in PEERS if n not in within]
    out["vs_peers"] = {
        "passed": not slower_than,
        "peers_within_budget": list(within),
        "not_faster_than": slower_than,
        "summary": (
            f"faster than {', '.join(within) or 'no peer'} (within budget)"
            if not slower_than
            else f"NOT faster than {', '.join(slower_than)}"
        )
        + (f"; not compared (over budget or not built): {', '.join(out_of)}" if out_of else ""),
    }
    return out


# --- output --------------------------------------------------------------------------------


def kib(n: int) -> str:
    """Bytes as KiB for the table."""
    return f"{n / 1024:,.1f}"


def results_table(target: str, where: str, rows: dict[str, dict[str, Any]], budget: float) -> Table:
    """The rich table of one target's rows (see the module docstring for the columns)."""
    table = Table(title=f"target {target} ({where}): budget {budget:g} pts, test accuracy paired vs fp32")
    columns = (
        "model",
        "test % [95% CI] n",
        "drop vs fp32 pts [CI]",
        "within budget",
        "p50 ÷ fp32",
        "p50 ms",
        "× vs fixed",
        "ONNX KiB",
        "shipped KiB",
    )
    cb.add_columns(table, columns)
    failures: list[str] = []
    for name, r in rows.items():
        if cb.failed_row(table, name, r, len(columns), failures):
            continue
        a = r["test_accuracy"]
        ci = r["drop_ci_points"]
        table.add_row(
            name,
            f"{cb.pct_ci(a['accuracy'], [a['ci_low'], a['ci_high']])} n={a['n']:,}",
            f"{r['drop_points']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "(reference)",
            "[green]yes[/]" if r["within_budget"] else "[red]no[/]",
            f"{r['p50_ratio']:.3f}" if r["p50_ratio"] is not None else "—",
            f"{r['p50_ms']:.3f}" if r["p50_ms"] is not None else "—",
            f"{r['speedup_vs_fixed']:.2f}" if r["speedup_vs_fixed"] is not None else "—",
            kib(r["onnx_bytes"]),
            kib(r["shipped_bytes"]),
        )
    if failures:
        table.caption, table.caption_justify = "\n".join(failures), "left"
    return table


def print_verdicts(all_verdicts: dict[str, dict[str, dict[str, Any]]]) -> None:
    """One line per target and verdict: PASS, FAIL or SKIP (not judged)."""
    console.print("[bold]Targets (the model searched on each target):")
    for target, targets in all_verdicts.items():
        for name, v in targets.items():
            mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}[v["passed"]]
            console.print(f"  {mark}  {target}: {name}: {v['summary']}")


def save_plot(tables: dict[str, dict[str, Any]], fp32_accuracy: float, budget: float, path: Path) -> None:
    """p50 ratio vs FP32 (x) against test accuracy with its interval (y), one panel per target,
    with the budget line and the 1.3x-faster-than-fixed line."""
    fig = Figure(figsize=(7 * len(tables), 5.5))
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, (target, t) in zip(axes, tables.items(), strict=True):
        for i, (name, r) in enumerate(t["rows"].items()):
            if r.get("p50_ratio") is None:
                continue
            a = r["test_accuracy"]
            y, low, high = (100 * a[k] for k in ("accuracy", "ci_low", "ci_high"))
            star = name.startswith("searched@")
            ax.errorbar(
                r["p50_ratio"],
                y,
                yerr=[[y - low], [high - y]],
                fmt="*" if star else "o",
                ms=12 if star else 7,
                color=colours(i),
                capsize=3,
                label=name,
            )
        ax.axhline(
            100 * fp32_accuracy - budget, color="tab:red", ls="--", lw=1, label=f"fp32 - {budget:g} pts"
        )
        fixed = t["rows"].get(FIXED, {}).get("p50_ratio")
        if fixed:
            ax.axvline(
                fixed / MIN_SPEEDUP_VS_FIXED,
                color="grey",
                ls=":",
                lw=1,
                label=f"{MIN_SPEEDUP_VS_FIXED:g}x faster than the fixed recipe",
            )
        ax.set_xscale("log")  # ratios from ~0.05 to 1: every model legible
        ax.set_xlabel(f"p50 / FP32 teacher, measured on {t['where']} (log scale)")
        ax.set_ylabel("test accuracy, % (Wilson 95% CI)")
        ax.set_title(f"target {target}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main ----------------------------------------------------------------------------------


def build_all(
    teacher: nn.Module,
    model_input: dict,
    params: dict,
    records: dict[str, dict],
    budget: float,
    tp_ratios: tuple[float, ...],
    timings: dict[str, float],
) -> list[Model]:
    """fp32, the searched models, the fixed recipe, NNCF and Torch-Pruning, each built once."""
    splits = data.Splits(model_input)
    teacher_onnx = nodes.export_teacher(teacher, model_input, params["compression"])
    models = [Model(FP32, "the FP32 teacher's ONNX (the reference)", teacher_onnx.SerializeToString())]
    built: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for target, result in records.items():
        with cb.phase(f"pipeline on the recipe searched on {target}", timings):
            models.append(searched_model(target, result, teacher, model_input, params, built))
    with cb.phase("pipeline on the fixed recipe (shipped parameters)", timings):
        fixed = Model(FIXED, "the pipeline with the shipped compression parameters")
        models.append(
            attempt(fixed, lambda: pipeline_model(teacher, model_input, params, params["compression"]))
        )
    with cb.phase("NNCF quantize_with_accuracy_control", timings):
        models.append(nncf_model(teacher_onnx, splits, params, budget))
    tried = ", ".join(f"{r:g}" for r in sorted(tp_ratios, reverse=True))
    with cb.phase(f"Torch-Pruning, ratios {tried} until one is within budget on val", timings):
        models.append(tp_model(teacher, teacher_onnx, splits, params, budget, tp_ratios))
    return models


def settings_of(
    args: argparse.Namespace, params: dict, data_info: dict, splits: data.Splits, options
) -> dict:
    """What the JSON records about how this run was made."""
    return {
        "quick": args.quick,
        "targets": args.targets,
        "budget_points": params["compression"]["search"].get("budget", {}).get("max_accuracy_drop"),
        "search": params["compression"]["search"],
        "tp_ratios": list(QUICK_TP_RATIOS if args.quick else TP_RATIOS),
        "min_speedup_vs_fixed": MIN_SPEEDUP_VS_FIXED,
        "final_latency": {**options.model_dump(), "inputs": f"the first {VAL_INPUTS} validation images"},
        "data": data_info,
        "samples": {split: len(splits.y(split)) for split in data.SPLITS},
        "teacher": str(args.reuse_teacher) if args.reuse_teacher else "trained with parameters.training",
        "seed": cb.SEED,
        "shipped_codec": "lzma (kedro_edge.runtimes.codec.shipped_size)",
    }


def main() -> int:
    """Search per target, build every model once, time them all on each target, report."""
    args = parse_args()
    timings: dict[str, float] = {}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        console.print("[yellow]--quick: smoke test, the figures below mean nothing")
    params = load_parameters(args)
    budget = config.parse(config.CompressionParams, params["compression"], "compression").search.budget
    budget = budget.max_accuracy_drop
    validation = config.parse(config.ValidationParams, params["validation"], "validation")
    with cb.phase("load + split data", timings):
        model_input, data_info = load_data(args, params)
    splits = data.Splits(model_input)
    with cb.phase("load teacher" if args.reuse_teacher else "train teacher", timings):
        teacher = load_teacher(args, model_input, params)
    options = QUICK_FINAL_LATENCY if args.quick else FINAL_LATENCY
    with ExitStack() as stack:
        fleet, names = None, {"host": "host"}
        if "device" in args.targets:
            with cb.phase("start a loopback device (sshd)", timings):
                fleet, names["device"] = start_device(stack)
        records = {}
        for target in args.targets:
            with cb.phase(f"search on {names[target]}", timings):
                records[names[target]] = run_search(
                    teacher, splits, params, names[target], fleet, args.out_dir, stamp
                )
        tp_ratios = QUICK_TP_RATIOS if args.quick else TP_RATIOS
        models = build_all(teacher, model_input, params, records, budget, tp_ratios, timings)
        paths = write_models(models, args.out_dir / "search_models")
        measured = {}
        for target in args.targets:
            with cb.phase(f"time {len(paths)} models on {names[target]}, one batch", timings):
                try:
                    measured[names[target]] = measure_target(
                        target, fleet, paths, splits.x("val")[:VAL_INPUTS], options
                    )
                except Exception as exc:  # a target that cannot measure is a result too
                    measured[names[target]] = {
                        "where": names[target],
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                    console.print(f"[red]  timing on {names[target]} failed[/]: {exc}")
    with cb.phase("test accuracy of every model", timings):
        tests = test_figures(models, splits, validation)
    tables, all_verdicts = {}, {}
    for target, m in measured.items():
        rows = target_rows(models, tests, m, budget)
        tables[target] = {
            "where": m["where"],
            "rows": rows,
            **{k: m[k] for k in ("facts", "sent_bytes", "error") if k in m},
        }
        all_verdicts[target] = verdicts(target, rows, budget)
        console.print(results_table(target, m["where"], rows, budget))
    print_verdicts(all_verdicts)
    report = {
        "benchmark": "search",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cb.machine(),
        "settings": settings_of(args, params, data_info, splits, options),
        "parameters": params,
        "searches": records,
        "models": {m.name: {"description": m.description, "error": m.error, **m.details} for m in models},
        "test": tests,
        "measurements": measured,
        "targets": tables,
        "verdicts": all_verdicts,
        "phase_seconds": timings,
    }
    json_path, png_path = args.out_dir / "search.json", args.out_dir / "search.png"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    save_plot(tables, tests[FP32]["accuracy"]["accuracy"], budget, png_path)
    console.print(f"Wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
