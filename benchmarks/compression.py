"""Benchmark: this project's compression pipeline against single-technique peers, per architecture.

Trains (or loads) an FP32 teacher on the default task (the generated glyphs of
``conf/base/catalog.yml``'s ``raw_images``, split with ``parameters.data``) with the shipped
``conf/base`` parameters, builds fourteen ONNX models from it and runs every one of them through
ONNX Runtime the same way (``kedro_edge.evaluation.stage.evaluate_stage``). Every candidate of this
project is built with the pipeline's own node functions (``kedro_edge.nodes``); a variant's
parameters are a deep copy of the parsed ones with dotted keys set (``variant``).

Alone, on the teacher (each technique's peer):

- ``fp32``                   the FP32 teacher exported to ONNX;
- ``ort_int8_only``          ONNX Runtime ``quantize_static`` of the teacher alone
                             (``ptq.quantize_int8``, the pipeline's ``compression.quantize``);
- ``nncf_ptq``               OpenVINO NNCF ``nncf.quantize`` on the teacher's ``onnx.ModelProto``,
                             calibrated on the pipeline's calibration images (NNCF defaults);
- ``nncf_accuracy_control``  ``nncf.quantize_with_accuracy_control`` on the same, allowed the
                             pipeline's gate ``validation.gates.max_accuracy_drop`` (absolute),
                             its metric top-1 on the VALIDATION split (the test split stays unseen);
- ``tp_prune_only``          Torch-Pruning at the pipeline's ratio + fine-tune alone, FP32 ONNX;
- ``prune_ptq``              that pruned model + plain ORT static INT8 (no QAT, no distillation:
                             the difference to ``kedro_edge`` is what QAT + distillation buy);
- ``lowrank_only``           ``factorise_teacher`` with ``compression.lowrank`` on (its energy or
                             target_macs, else energy 0.9) + its fine-tune, FP32 ONNX (the
                             AIMET-SVD-style peer);
- ``cluster_ptq``            ``cluster_student`` on the teacher (k=16, on) + its fine-tune, then
                             ``export_model``: plain ORT INT8 (the TF-MOT-clustering-style peer);
- ``int8_mixed_auto``        ``export_model`` of the teacher with ``quantize.exclude: auto``
                             (the NNCF-accuracy-aware-style peer: float where INT8 costs).

Combined with the pipeline. Names are relative to the shipped parameters: ``+cluster``
switches on what they leave off, ``-cluster`` switches off what they have on (``cluster``:
``cluster_student``, k=16; ``mixed``: ``quantize.exclude: auto``, off is ``[]``; ``lowrank``:
``factorise_teacher``). With clustering, mixed precision and low-rank all off as shipped:

- ``kedro_edge``             the pipeline's model.onnx with the shipped parameters, its nodes in
                             its order: low-rank (off) -> prune -> QAT -> distill -> cluster (off)
                             -> ``export_model``;
- ``kedro_edge+cluster``     the same distilled student, ``cluster_student`` (k=16, on), exported;
- ``kedro_edge+mixed``       the same student exported with ``quantize.exclude: auto``;
- ``kedro_edge+cluster+mixed``  the clustered student exported with ``exclude: auto``;
- ``kedro_edge+lowrank``     a second full pass: low-rank on (``lowrank_only``'s factorised
                             teacher, the very node output) -> prune -> QAT -> distill -> ptq.

With clustering shipped on they are ``kedro_edge-cluster``, ``kedro_edge+mixed``,
``kedro_edge-cluster+mixed`` and ``kedro_edge+lowrank``: always the other three cells of
(clustering on/off) x (mixed on/off) on ``kedro_edge``'s distilled student, and a second full
pass with low-rank switched (with it off, the prune node gets the peers' pruned teacher). The
peers quantize with ``exclude: []`` whatever the shipped parameters say. A candidate that fails
to build (NNCF above all, or a new technique) is recorded with its error and the rest goes on.

Columns: clean test accuracy with its Wilson interval and n; robust accuracy on the pipeline's
perturbed test copy (``validation.robustness``); the paired change vs ``fp32`` (points,
paired-bootstrap interval, exact McNemar p) clean and robust; ONNX size and reduction; shipped
size (the ONNX file lzma-compressed, ``kedro_edge.runtimes.codec.shipped_size``, as a release sends it)
and its reduction vs the fp32 ONNX FILE; params; MACs; p50/p90 latency at batch 1 on one
thread and p50 as a ratio to ``fp32``. A second table gives each technique's marginal effect:
a candidate against its base (``lineage``: the peers' fixed bases, e.g. ``cluster_ptq`` vs
``ort_int8_only``; every pair of pipeline candidates that differ in one technique, e.g.
``kedro_edge+lowrank`` vs ``kedro_edge``, ``kedro_edge+cluster+mixed`` vs ``kedro_edge+mixed``),
paired accuracy change, size/shipped/MACs/p50 ratios and a flag when its p50 is above its base's
(in every round: a real slowdown, printed with why the technique can do that, e.g. low-rank's
two GEMMs/convs per layer at batch 1; in some rounds only: noise). Latency is measured in
interleaved rounds (every model once per round, the order reversed every other round) and the
median of the rounds' p50/p90 is reported, so machine drift hits all models alike. The JSON
holds each candidate's reports (low-rank ranks, cluster distinct values, excluded layers and
why; ``int8_distinct_values``: distinct INT8 values per output channel of its weights).

Targets for the final model (``kedro_edge``): p50 at least 8x lower and file at least 12x
smaller than ``fp32``; clean accuracy drop (point estimate) at most 1.0 point (its interval and
the robust drop are reported); and faster than every peer unless that peer is more accurate,
which counts only when the paired interval of peer-minus-ours lies entirely above 0. And for
the best pipeline candidate (``kedro_edge`` or one of its four variants) within that 1.0-point
drop (point estimate): at least 25x fewer bytes shipped than the fp32 ONNX file
(``shipped_reduction_vs_fp32``, which names the variant and reports its drop's interval).

Architectures (``--models``, comma-separated; ``--model`` for one):

- ``residual``   ``parameters.model`` as shipped (``ResidualCNN`` widths 48/96/192);
- ``mobilenet``  ``kedro_edge.models.MobileNetV2`` with its defaults.

Both train with the shipped epochs: measured here (2 cores, idle) an epoch of the 12,800
training images takes ~40 s for MobileNetV2 and ~60 s for the residual net. Before issue 10's
candidates a full run was ~15-25 min per architecture; they add ~5 training epochs on the
teacher or student (low-rank and cluster fine-tunes), a second prune + distill pass (~12
epochs, ``kedro_edge+lowrank``), three ``exclude: auto`` searches (~1-3 min each: every layer
quantized alone on the validation split, then timed prefix/suffix walks) and twice the models
to measure, so expect ~35-55 min per architecture on an idle machine (``--quick``: ~10 min per
architecture here on a shared machine). Depthwise convs suffer most from a busy machine: with a
test suite running beside it, a MobileNetV2 epoch took 387 s (residual: 131 s). Run on an idle
machine.

Writes ``benchmarks/results/compression_<model>.json`` and ``compression_<model>.png`` for
each architecture; exits 0 whether or not the targets pass (it is a measurement, not a test).
Run from the project root (``nncf`` is the optional extra ``bench``: ``pip install -e .[bench]``):

    .venv/bin/python benchmarks/compression.py [--models residual,mobilenet] [--quick]
        [--reuse-teacher data/06_models/teacher.pt] [--rounds N] [--out-dir DIR]

``--quick`` is a smoke test: every training stage one epoch on 384 training images, short
latency runs (10 warm-up, 50 runs, 2 rounds); the validation and test splits stay whole, so
every code path, NNCF and ``exclude: auto`` (at its own timing settings) included, runs as at
defaults, but its figures mean nothing.
``--reuse-teacher`` loads a teacher saved by ``kedro_edge.io.TorchModuleDataset`` instead of
training one, for the architecture of its class; the ``splits.npz`` the same run wrote beside
it (``../05_model_input/splits.npz``) must equal this script's split, or it refuses (a teacher
trained on another split may have seen these test images). The glyph data are generated once
into ``<out-dir>/cache/`` (never into ``data/``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
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

from kedro_edge import config, data, nodes  # noqa: E402
from kedro_edge.compress import cluster as clustering  # noqa: E402
from kedro_edge.compress import ptq  # noqa: E402
from kedro_edge.evaluation import plots, robustness  # noqa: E402
from kedro_edge.evaluation import stage as stage_eval  # noqa: E402
from kedro_edge.evaluation import statistics as paired_stats  # noqa: E402
from kedro_edge.evaluation.records import StageFigures  # noqa: E402
from kedro_edge.io import GlyphsDataset, NpzDataset, TorchModuleDataset  # noqa: E402
from kedro_edge.models import import_class  # noqa: E402
from kedro_edge.runtimes import onnx_export
from kedro_edge.runtimes import onnxruntime as ort_host

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "base"
PARAMETER_FILES = (
    "parameters_training.yml",
    "parameters_compression.yml",
    "parameters_validation.yml",
)
SEED = 0

# Latency per model and round: the defaults are stricter than the pipeline's validation.
LATENCY = config.TimingSpec(threads=1, warmup=100, min_runs=1000, min_seconds=1.0)
QUICK_LATENCY = config.TimingSpec(threads=1, warmup=10, min_runs=50, min_seconds=0.05)
ROUNDS, QUICK_ROUNDS = 3, 2
# --quick: every training stage one epoch on a slice of the training split (the validation
# and test splits stay whole, so every measurement runs as at defaults)
QUICK_TRAIN_SAMPLES = 384
QUICK_OVERRIDES = {
    "training.epochs": 1,
    "compression.lowrank.finetune_epochs": 1,
    "compression.prune.finetune_epochs": 1,
    "compression.distill.epochs": 1,
    "compression.cluster.finetune_epochs": 1,
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
PEERS = (
    "ort_int8_only",
    "nncf_ptq",
    "nncf_accuracy_control",
    "tp_prune_only",
    "prune_ptq",
    "lowrank_only",
    "cluster_ptq",
    "int8_mixed_auto",
)
# Issue 10's techniques, each switched on (or, if the shipped parameters have it on, off) in the
# pipeline variants: ``kedro_edge+cluster`` switches on what the shipped parameters leave off,
# ``kedro_edge-cluster`` switches off what they have on (the order of this tuple is the naming order).
TECHNIQUES = ("cluster", "mixed", "lowrank")

# Each peer's base: the candidate it adds techniques to (its marginal effect is measured against
# it, paired), and what it adds. The pipeline's edges depend on the shipped parameters: ``lineage``.
PEER_LINEAGE: dict[str, tuple[str, tuple[str, ...]]] = {
    "ort_int8_only": (FP32, ("int8",)),
    "nncf_ptq": (FP32, ("int8",)),
    "nncf_accuracy_control": (FP32, ("int8",)),
    "tp_prune_only": (FP32, ("prune",)),
    "prune_ptq": ("tp_prune_only", ("int8",)),
    "lowrank_only": (FP32, ("lowrank",)),
    "cluster_ptq": ("ort_int8_only", ("cluster",)),
    "int8_mixed_auto": ("ort_int8_only", ("mixed",)),
}
# Why a technique can make batch-1 CPU latency worse than its base's (written into the JSON
# and printed for every candidate whose p50 is above its base's).
SLOWER_BECAUSE = {
    "lowrank": "factorised layers run two smaller GEMMs/convs instead of one: at batch 1 on a CPU the "
    "extra kernel launch and memory pass can cost more than the MACs saved",
    "int8": "an INT8 QDQ graph runs what ORT fuses in integer kernels; the Quantize/DequantizeLinear "
    "passes, requantization and layout changes around the rest (depthwise convs, residual Adds, pooling) "
    "can cost more at batch 1 than the integer arithmetic saves",
    "mixed": "each float layer kept in the INT8 graph adds a DequantizeLinear/QuantizeLinear pair and a "
    "layout change (ORT's INT8 kernels run NHWC, its float ones NCHWc) at its boundaries, and runs its "
    "MACs in float",
    "cluster": "clustering changes weight values only, not shapes or operators: the same kernels run, so "
    "a difference of a few percent is session-to-session variation (a session's memory layout alone "
    "moved p50 by up to 10% here, see compress.mixed_precision), not the technique",
    "prune": "structured pruning leaves channel counts that need not be multiples of the SIMD width: "
    "idle vector lanes can cost more than the MACs saved (see compression.prune.round_to)",
}

# parameter variants: dotted keys set on a deep copy of the parsed parameters
CLUSTER_K = 16
LOWRANK_ENERGY = 0.9  # when the parameters set neither lowrank.energy nor lowrank.target_macs
CLUSTER = {"compression.cluster.enabled": True, "compression.cluster.k": CLUSTER_K}
MIXED = {"compression.quantize.exclude": "auto"}
PLAIN_INT8 = {"compression.quantize.enabled": True, "compression.quantize.exclude": []}

# The targets for the final model.
MIN_SPEEDUP = 8.0  # fp32 p50 / final p50
MIN_SIZE_REDUCTION = 12.0  # fp32 bytes / final bytes
MAX_ACCURACY_DROP = 1.0  # points of clean test accuracy below fp32 (point estimate)
# ... and for the best pipeline variant within MAX_ACCURACY_DROP
MIN_SHIPPED_REDUCTION = 25.0  # fp32 ONNX bytes / the variant's lzma-compressed ONNX bytes

# piped output (a log file) gets a width that fits the table instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() else 290)


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
    # pipeline candidates: which of TECHNIQUES are on (None: a peer)
    states: dict[str, bool] | None = None


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
        if key == data.PIXELS:  # the same index lists over the same generated images
            continue
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
        return nodes.train_teacher(model_input, params["model"], params["training"])[0]
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


Built = onnx.ModelProto | tuple[onnx.ModelProto, nn.Module, dict[str, Any]]


def attempt(candidate: Candidate, build: Callable[[], Built]) -> Candidate:
    """Build a candidate's ONNX model (and, when ``build`` returns them, its torch module and
    details); a failure is recorded in its row instead of ending the run."""
    try:
        built = build()
        if isinstance(built, tuple):
            built, candidate.module, details = built
            candidate.details = {**(candidate.details or {}), **details}
        candidate.onnx_model = built
    except Exception as exc:  # any failure of a peer's tool (NNCF above all) is a result too
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        candidate.error = f"{type(exc).__name__}: {first}"
        candidate.details = {**(candidate.details or {}), "traceback": traceback.format_exc()[-4000:]}
        console.print(f"[red]  {candidate.name} failed[/]: {candidate.error}")
    return candidate


def variant(params: dict, overrides: dict[str, Any]) -> dict:
    """A deep copy of the parsed ``params`` with the dotted keys of ``overrides`` set, validated."""
    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        set_dotted(out, dotted, value)
    config.validate_parameters(out)
    return out


def lowrank_overrides(params: dict) -> dict[str, Any]:
    """Low-rank on, with the ranks the parameters ask for (energy or target_macs), else energy 0.9."""
    section = params["compression"].get("lowrank") or {}
    overrides: dict[str, Any] = {"compression.lowrank.enabled": True}
    if "energy" in section and section.get("energy") is None and section.get("target_macs") is None:
        overrides["compression.lowrank.energy"] = LOWRANK_ENERGY
    return overrides


def shipped_states(params: dict) -> dict[str, bool]:
    """Which of ``TECHNIQUES`` the parameters switch on (mixed: ``quantize.exclude: auto``)."""
    cfg = config.parse(config.CompressionParams, params["compression"], "compression")
    return {
        "cluster": cfg.cluster.enabled,
        "mixed": cfg.quantize.exclude == "auto",
        "lowrank": cfg.lowrank.enabled,
    }


def switch(params: dict, technique: str, on: bool) -> dict[str, Any]:
    """Dotted overrides turning ``technique`` on or off ({} when the parameters already have it so).

    On: clustering with k=16, ``exclude: auto``, low-rank with the parameters' ranks. Off:
    clustering and low-rank disabled, ``exclude: []``."""
    if shipped_states(params)[technique] == on:
        return {}
    if technique == "cluster":
        return CLUSTER if on else {"compression.cluster.enabled": False}
    if technique == "mixed":
        return MIXED if on else {"compression.quantize.exclude": []}
    return lowrank_overrides(params) if on else {"compression.lowrank.enabled": False}


def pipeline_name(states: dict[str, bool], shipped: dict[str, bool]) -> str:
    """``kedro_edge`` plus ``+technique`` / ``-technique`` for each state that differs from shipped."""
    return FINAL + "".join(("+" if states[t] else "-") + t for t in TECHNIQUES if states[t] != shipped[t])


def pipeline_description(states: dict[str, bool]) -> str:
    stages = ["low-rank"] * states["lowrank"] + ["prune", "QAT", "distill"] + ["cluster"] * states["cluster"]
    return " -> ".join([*stages, "ORT INT8" + (" (exclude auto)" if states["mixed"] else "")])


def lineage(candidates: list[Candidate]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(candidate, base, what it adds) for the marginal-effect table: the peers' fixed bases, the
    pipeline vs fp32, and every pair of pipeline candidates that differ in one technique only
    (the one with it on, against the one with it off)."""
    edges = [(name, base, adds) for name, (base, adds) in PEER_LINEAGE.items()]
    pipeline = {c.name: c.states for c in candidates if c.states is not None}
    shipped = pipeline[FINAL]
    final_adds = (
        ("lowrank",) * shipped["lowrank"]
        + ("prune", "qat", "distill")
        + ("cluster",) * shipped["cluster"]
        + ("int8",)
        + ("mixed",) * shipped["mixed"]
    )
    edges.append((FINAL, FP32, final_adds))
    for name, states in pipeline.items():
        for base, base_states in pipeline.items():
            differ = [t for t in TECHNIQUES if states[t] != base_states[t]]
            if len(differ) == 1 and states[differ[0]]:
                edges.append((name, base, (differ[0],)))
    order = {c.name: i for i, c in enumerate(candidates)}
    return sorted(edges, key=lambda e: (order.get(e[0], len(order)), order.get(e[1], len(order))))


def needs(candidate: Candidate) -> nn.Module:
    """The torch module of an earlier candidate another one is built from."""
    if candidate.onnx_model is None or candidate.module is None:
        raise RuntimeError(f"needs {candidate.name}, which was not built")
    return candidate.module


def int8_distinct(model: onnx.ModelProto) -> dict[str, Any] | None:
    """How many distinct INT8 values the weights keep per output channel (clustering: at most k)."""
    per_init = clustering.distinct_values_per_channel(model)
    if not per_init:
        return None
    return {
        "max_per_channel": max(per_init.values()),
        "median_over_initializers": float(np.median(list(per_init.values()))),
        "initializers": len(per_init),
        "per_initializer": per_init,
    }


def import_nncf():
    # openvino-telemetry sends usage events (and writes a consent folder in $HOME) unless it
    # sees CI; this sets it for this process only.
    os.environ["CI"] = "true"
    import nncf

    return nncf


def calibration_dataset(nncf, calib: np.ndarray):
    """The pipeline's calibration images, one per item (NNCF's statistics are per sample)."""
    return nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {onnx_export.INPUT: x})


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
            self._model, self._session = model, ort_host.session(model, threads=os.cpu_count() or 1)
        pairs = list(items)
        x = np.concatenate([image for image, _ in pairs])
        y = np.asarray([label for _, label in pairs])
        right = ort_host.ort_predict(self._session, x, self.batch_size).argmax(1) == y
        return float(right.mean()), [float(r) for r in right]


def nncf_accuracy_control(
    teacher_onnx: onnx.ModelProto, calib: np.ndarray, splits: data.Splits, max_drop_points: float, batch: int
) -> onnx.ModelProto:
    nncf = import_nncf()
    x_val, y_val = splits.x("val"), splits.y("val")
    validation = nncf.Dataset(
        [(x_val[i : i + 1], int(y_val[i])) for i in range(len(y_val))],
        lambda item: {onnx_export.INPUT: item[0]},
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
    sess = ort_host.session(model, threads=os.cpu_count() or 1)
    return float((ort_host.ort_predict(sess, splits.x("val"), batch).argmax(1) == splits.y("val")).mean())


def ptq_peers(
    teacher: nn.Module,
    teacher_onnx: onnx.ModelProto,
    calib: np.ndarray,
    plain_int8: config.QuantizeParams,
    splits: data.Splits,
    max_drop: float,
    batch: int,
    timings: dict[str, float],
) -> tuple[Candidate, Candidate, Candidate]:
    """The post-training INT8 peers of an FP32 ONNX model: ORT ``quantize_static``, NNCF
    ``quantize`` and NNCF ``quantize_with_accuracy_control`` (``max_drop`` points on val)."""
    int8_only = Candidate("ort_int8_only", "ORT quantize_static (QDQ) of the teacher", module=teacher)
    with phase("ORT static INT8 of the teacher (ort_int8_only)", timings):
        attempt(int8_only, lambda: ptq.quantize_int8(teacher_onnx, calib, plain_int8))
    nncf_default = Candidate("nncf_ptq", "NNCF quantize of the teacher ONNX, defaults", module=teacher)
    with phase("NNCF post-training quantization (nncf_ptq)", timings):
        attempt(nncf_default, lambda: nncf_ptq(teacher_onnx, calib))
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
    return int8_only, nncf_default, control


def build_candidates(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    params: dict,
    timings: dict[str, float],
) -> tuple[list[Candidate], dict]:
    """fp32, the single-technique peers, the pipeline's model and its variants; the prune report."""
    comp, train = params["compression"], params["training"]
    cfg = config.parse(config.CompressionParams, comp, "compression")
    gates = config.parse(config.ValidationParams, params["validation"], "validation").gates
    max_drop = gates.max_accuracy_drop if gates.max_accuracy_drop is not None else MAX_ACCURACY_DROP
    batch = params["validation"].get("batch_size", 256)
    splits = data.Splits(model_input)
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    plain_int8 = cfg.quantize.model_copy(update={"exclude": []})  # no mixed precision for the peers
    with phase("export fp32 teacher", timings):
        teacher_onnx = nodes.export_teacher(teacher, model_input, comp)
    fp32 = Candidate(FP32, "FP32 teacher, ONNX", teacher_onnx, teacher)
    int8_only, nncf_default, control = ptq_peers(
        teacher, teacher_onnx, calib, plain_int8, splits, max_drop, batch, timings
    )
    on_teacher = teacher_peers(teacher, model_input, params, timings)
    with phase("prune + fine-tune (tp_prune_only, and the pipeline's prune stage)", timings):
        pruned, prune_report = nodes.apply_technique("prune", teacher, teacher, model_input, comp, train)
        pruned_onnx = onnx_export.to_onnx(pruned, splits.input_shape, cfg.export.opset)
    prune_ptq = Candidate("prune_ptq", "the pruned model + ORT quantize_static, no QAT/KD", module=pruned)
    with phase("ORT static INT8 of the pruned model (prune_ptq)", timings):
        attempt(prune_ptq, lambda: ptq.quantize_int8(pruned_onnx, calib, plain_int8))
    lowrank_only = on_teacher["lowrank_only"]
    shipped = shipped_states(params)
    with phase(
        f"the pipeline with the shipped parameters: {pipeline_description(shipped)} (kedro_edge)", timings
    ):
        # lowrank_only's module is the low-rank node's output for the shipped parameters when they
        # switch it on (its variant only sets what is already set); else the prune node gets the teacher
        reuse = shipped["lowrank"] and lowrank_only.onnx_model is not None
        factorised = factorised_by(lowrank_only) if reuse else None
        final, student = pipeline_run(teacher, model_input, params, pruned, factorised)
    candidates = [
        fp32,
        int8_only,
        nncf_default,
        control,
        Candidate("tp_prune_only", "Torch-Pruning + fine-tune, FP32 ONNX", pruned_onnx, pruned),
        prune_ptq,
        lowrank_only,
        on_teacher["cluster_ptq"],
        on_teacher["int8_mixed_auto"],
        final,
        *pipeline_variants(teacher, model_input, params, final, student, pruned, lowrank_only, timings),
    ]
    return candidates, prune_report


def teacher_peers(
    teacher: nn.Module, model_input: dict[str, np.ndarray], params: dict, timings: dict[str, float]
) -> dict[str, Candidate]:
    """The new techniques alone, on the teacher: low-rank (FP32), clustering + INT8, mixed INT8."""
    train = params["training"]
    lowrank = variant(params, lowrank_overrides(params))["compression"]
    clustered = variant(params, {**CLUSTER, **PLAIN_INT8})["compression"]
    mixed = variant(params, {**PLAIN_INT8, **MIXED})["compression"]
    lr = config.parse(config.CompressionParams, lowrank, "compression").lowrank
    ranks = f"energy {lr.energy:g}" if lr.energy is not None else f"target_macs {lr.target_macs:g}"
    lowrank_only = Candidate("lowrank_only", f"truncated SVD ({ranks}) + fine-tune, FP32 ONNX")

    def build_lowrank() -> Built:
        module, report = nodes.apply_technique("lowrank", teacher, teacher, model_input, lowrank, train)
        return nodes.export_teacher(module, model_input, lowrank), module, {"lowrank_report": report}

    with phase("low-rank factorisation + fine-tune (lowrank_only)", timings):
        attempt(lowrank_only, build_lowrank)
    cluster_ptq = Candidate("cluster_ptq", f"k-means weight sharing (k={CLUSTER_K}) + fine-tune, ORT INT8")

    def build_cluster() -> Built:
        module, report = nodes.apply_technique("cluster", teacher, teacher, model_input, clustered, train)
        model, quantize_report = nodes.export_model(module, model_input, clustered)
        return model, module, {"cluster_report": report, "quantize_report": quantize_report}

    with phase("clustering + fine-tune + ORT INT8 of the teacher (cluster_ptq)", timings):
        attempt(cluster_ptq, build_cluster)
    int8_mixed = Candidate("int8_mixed_auto", "ORT INT8 of the teacher, quantize.exclude auto (mixed)")

    def build_mixed() -> Built:
        model, quantize_report = nodes.export_model(teacher, model_input, mixed)
        return model, teacher, {"quantize_report": quantize_report}

    with phase("mixed-precision INT8 of the teacher, exclude auto (int8_mixed_auto)", timings):
        attempt(int8_mixed, build_mixed)
    return {c.name: c for c in (lowrank_only, cluster_ptq, int8_mixed)}


def pipeline_run(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    params: dict,
    pruned: nn.Module | None = None,
    factorised: tuple[nn.Module, dict] | None = None,
) -> tuple[Candidate, nn.Module]:
    """The compression pipeline's nodes in its order with ``params``: low-rank -> prune -> QAT ->
    distill -> cluster -> export; and the distilled student (the cluster node's input).

    ``pruned``: the prune node's output, if low-rank is off (the peers' pruned teacher, the same
    thing); ``factorised``: the low-rank node's output and report, if already run."""
    comp, train = params["compression"], params["training"]
    lowrank, lowrank_report = factorised or nodes.apply_technique(
        "lowrank", teacher, teacher, model_input, comp, train
    )
    details: dict[str, Any] = {}
    if lowrank_report.get("method") != "none":
        details["lowrank_report"] = lowrank_report
        pruned = None  # the pipeline prunes the factorised teacher
    if pruned is None:
        pruned, details["prune_report"] = nodes.apply_technique(
            "prune", lowrank, lowrank, model_input, comp, train
        )
    qat = nodes.apply_technique("quantize", pruned, pruned, model_input, comp, train)[0]
    student = nodes.apply_technique("distill", qat, teacher, model_input, comp, train)[0]
    shipped, cluster_report = nodes.apply_technique("cluster", student, student, model_input, comp, train)
    if cluster_report.get("method") != "none":
        details["cluster_report"] = cluster_report
    model, details["quantize_report"] = nodes.export_model(shipped, model_input, comp)
    states = shipped_states(params)
    run = Candidate(FINAL, pipeline_description(states), model, shipped, details=details, states=states)
    return run, student


def factorised_by(lowrank_only: Candidate) -> tuple[nn.Module, dict]:
    """lowrank_only's factorised, fine-tuned teacher and its report: the low-rank node's output."""
    return needs(lowrank_only), lowrank_only.details["lowrank_report"]


def pipeline_variants(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    params: dict,
    final: Candidate,
    student: nn.Module,
    pruned: nn.Module,
    lowrank_only: Candidate,
    timings: dict[str, float],
) -> list[Candidate]:
    """The pipeline with issue 10's techniques switched relative to the shipped parameters: the
    other three cells of (clustering on/off) x (mixed precision on/off) on kedro_edge's distilled
    student, and a second full pass with low-rank switched."""
    train = params["training"]
    shipped = shipped_states(params)
    clustered: dict[bool, tuple[nn.Module, dict]] = {shipped["cluster"]: (final.module, {})}
    out: list[Candidate] = []
    cells = [
        {**shipped, "cluster": c, "mixed": m}
        for c, m in itertools.product((False, True), repeat=2)
        if (c, m) != (shipped["cluster"], shipped["mixed"])
    ]
    cells.sort(key=lambda st: (sum(st[t] != shipped[t] for t in TECHNIQUES), st["mixed"] != shipped["mixed"]))
    for states in cells:
        overrides = {
            **switch(params, "cluster", states["cluster"]),
            **switch(params, "mixed", states["mixed"]),
        }
        comp = variant(params, overrides)["compression"]
        candidate = Candidate(
            pipeline_name(states, shipped),
            f"kedro_edge's student: {pipeline_description(states)}",
            states=states,
            details={"parameter_overrides": overrides},
        )

        def build(cluster_on: bool = states["cluster"], comp: dict = comp) -> Built:
            if cluster_on not in clustered:  # the cluster node on the distilled student, once per state
                module, report = nodes.apply_technique("cluster", student, student, model_input, comp, train)
                details = {"cluster_report": report} if report.get("method") != "none" else {}
                clustered[cluster_on] = module, details
            module, details = clustered[cluster_on]
            model, quantize_report = nodes.export_model(module, model_input, comp)
            return model, module, {**details, "quantize_report": quantize_report}

        with phase(f"{candidate.description} ({candidate.name})", timings):
            out.append(attempt(candidate, build))
    states = {**shipped, "lowrank": not shipped["lowrank"]}
    overrides = switch(params, "lowrank", states["lowrank"])
    second = Candidate(
        pipeline_name(states, shipped),
        f"second pass: {pipeline_description(states)}",
        states=states,
        details={"parameter_overrides": overrides},
    )

    def build_second() -> Built:
        # with low-rank on, lowrank_only's module is the low-rank node's output for these parameters;
        # with it off, the prune node's output is the peers' pruned teacher
        on = states["lowrank"]
        factorised = factorised_by(lowrank_only) if on else None
        run, _ = pipeline_run(
            teacher, model_input, variant(params, overrides), None if on else pruned, factorised
        )
        return run.onnx_model, run.module, {**second.details, **run.details}

    with phase(f"{second.description} ({second.name})", timings):
        out.append(attempt(second, build_second))
    return out


# --- measurement ---------------------------------------------------------------------------


@dataclass
class Measured:
    figures: dict[str, Any]
    scores: np.ndarray
    robust_scores: np.ndarray | None


def measure(
    candidates: list[Candidate],
    splits: data.Splits,
    robust_x: np.ndarray | None,
    latency: config.TimingSpec,
    rounds: int,
    validation: config.ValidationParams,
) -> dict[str, Measured]:
    """Every built model: round 1 is ``evaluate_stage`` (accuracy, robust accuracy, footprint,
    latency), later rounds latency only, the order reversed every other round."""
    built = [c for c in candidates if c.onnx_model is not None]
    runs: dict[str, list[dict[str, float]]] = {c.name: [] for c in built}
    first: dict[str, stage_eval.StageEvaluation] = {}
    samples = splits.x("test")[:64]  # what evaluate_stage times
    for r in range(rounds):
        for c in built if r % 2 == 0 else built[::-1]:
            if r == 0:
                ev = stage_eval.evaluate_stage(
                    c.onnx_model,
                    c.module,
                    splits,
                    latency,
                    validation.batch_size,
                    robust_x,
                    validation.confidence,
                )
                first[c.name] = ev
                lat = {
                    "latency_p50_ms": ev.figures.latency_p50_ms,
                    "latency_p90_ms": ev.figures.latency_p90_ms,
                    "latency_runs": ev.figures.latency_runs,
                }
            else:
                times = ort_host.latency_ms(ort_host.session(c.onnx_model, latency.threads), samples, latency)
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
            combine_rounds(first[c.name].figures.to_json(), runs[c.name]),
            first[c.name].scores,
            first[c.name].robust_scores,
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
    return paired_stats.paired(reference, candidate, cfg.confidence, cfg.bootstrap_resamples).to_dict()


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
        # lzma-compressed, as a release ships it, against the fp32 ONNX file (not fp32's shipped bytes)
        row["shipped_reduction"] = ref.figures["size_bytes"] / m.figures["shipped_bytes"]
        if row["quantize_linear_nodes"]:
            try:
                row["int8_distinct_values"] = int8_distinct(c.onnx_model)
            except Exception as exc:  # a figure for the details only: never end the run over it
                row["int8_distinct_values"] = {"error": f"{type(exc).__name__}: {exc}"}
        row["p50_ratio"] = m.figures["latency_p50_ms"] / ref.figures["latency_p50_ms"]
        row["p50_speedup"] = 1 / row["p50_ratio"]
        if c.name != FP32:
            row["vs_fp32"] = {
                "clean": paired(ref.scores, m.scores, cfg),
                "robust": paired(ref.robust_scores, m.robust_scores, cfg),
            }
        models[c.name] = row
    return models


def marginal_effects(
    models: dict[str, dict[str, Any]],
    measured: dict[str, Measured],
    cfg: config.ValidationParams,
    edges: list[tuple[str, str, tuple[str, ...]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each (candidate, base) edge of ``lineage``: the paired accuracy change and the ratios of size,
    shipped bytes, MACs and p50 (per round too); and the edges whose candidate has a median p50
    above its base's, with why the added technique can do that."""
    effects: list[dict[str, Any]] = []
    slower: list[dict[str, Any]] = []
    for name, base, adds in edges:
        row = models.get(name)
        if row is None or "error" in row:
            continue
        if base not in measured:
            effects.append(
                {"model": name, "base": base, "adds": list(adds), "error": f"{base} was not built"}
            )
            continue
        ref = models[base]
        per_round = [
            ours / theirs
            for ours, theirs in zip(row["latency_p50_ms_rounds"], ref["latency_p50_ms_rounds"], strict=True)
        ]
        ratio = row["latency_p50_ms"] / ref["latency_p50_ms"]
        why = "; ".join(SLOWER_BECAUSE[t] for t in adds if t in SLOWER_BECAUSE) if ratio > 1 else None
        effect = {
            "model": name,
            "base": base,
            "adds": list(adds),
            "clean": paired(measured[base].scores, measured[name].scores, cfg),
            "robust": paired(measured[base].robust_scores, measured[name].robust_scores, cfg),
            **{
                f"{key}_ratio": row[key] / ref[key]
                for key in ("size_bytes", "shipped_bytes", "params", "macs")
            },
            "p50_ratio": ratio,
            "p50_ratio_rounds": per_round,
            "rounds_slower": sum(r > 1 for r in per_round),
            "slower": ratio > 1,
            # slower in every interleaved round: not the drift or noise of one round
            "slower_in_every_round": all(r > 1 for r in per_round),
            "slower_because": why,
        }
        effects.append(effect)
        if ratio > 1:
            slower.append(
                {
                    "model": name,
                    "base": base,
                    "adds": list(adds),
                    "p50_ratio": ratio,
                    "rounds_slower": f"{effect['rounds_slower']}/{len(per_round)}",
                    "in_every_round": effect["slower_in_every_round"],
                    "macs_ratio": effect["macs_ratio"],
                    "why": why or "no known cause in the added technique(s): likely run-to-run noise",
                }
            )
    return effects, slower


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


def drop_figures(clean: dict[str, Any], robust: dict[str, Any] | None) -> dict[str, Any]:
    """A paired change vs fp32 as drops in points (positive: worse), with intervals."""
    return {
        "drop_points": round(-clean["diff_points"], 9) + 0.0,  # no float noise at the limit, no -0
        "drop_ci_points": [-clean["ci_high_points"] + 0.0, -clean["ci_low_points"] + 0.0],
        "mcnemar_p": clean["p_value"],
        "robust_drop_points": None if robust is None else -robust["diff_points"] + 0.0,
        "robust_drop_ci_points": None
        if robust is None
        else [-robust["ci_high_points"] + 0.0, -robust["ci_low_points"] + 0.0],
    }


def shipped_target(
    models: dict[str, dict[str, Any]], pipeline: list[str], cfg: config.ValidationParams
) -> dict[str, Any]:
    """fp32 ONNX bytes over the shipped (lzma) bytes of the pipeline variant that ships fewest bytes
    among those within ``MAX_ACCURACY_DROP`` (point estimate) of fp32's clean statistics."""
    fp32_bytes = models[FP32]["size_bytes"]
    variants: dict[str, dict[str, Any]] = {}
    for name in pipeline:
        row = models.get(name, {})
        if "vs_fp32" not in row:
            variants[name] = {"error": row.get("error", "not built")}
            continue
        drops = drop_figures(row["vs_fp32"]["clean"], row["vs_fp32"]["robust"])
        variants[name] = {
            "shipped_bytes": row["shipped_bytes"],
            "shipped_reduction": row["shipped_reduction"],
            **drops,
            "within_accuracy": drops["drop_points"] <= MAX_ACCURACY_DROP,
        }
    eligible = [n for n, v in variants.items() if v.get("within_accuracy")]
    description = (
        f"best pipeline variant within {MAX_ACCURACY_DROP:g} clean points of fp32 (point estimate) ships "
        f"at least {MIN_SHIPPED_REDUCTION:g}x fewer bytes (lzma) than the fp32 ONNX file"
    )
    if not eligible:
        built = [n for n, v in variants.items() if "error" not in v]
        smallest = max(built, key=lambda n: variants[n]["shipped_reduction"], default=None)
        summary = f"no pipeline variant within {MAX_ACCURACY_DROP:g} pts of fp32" + (
            f"; the fewest bytes: {smallest}, {variants[smallest]['shipped_reduction']:.1f}x, clean "
            f"{drop_text(models[smallest]['vs_fp32']['clean'])}"
            if smallest
            else ""
        )
        measured = {"variant": None, "fp32_onnx_bytes": fp32_bytes, "variants": variants}
        return target(description, measured, MIN_SHIPPED_REDUCTION, False, summary)
    best = max(eligible, key=lambda n: variants[n]["shipped_reduction"])
    chosen = variants[best]
    pct = round(100 * cfg.confidence)
    robust = models[best]["vs_fp32"]["robust"]
    summary = (
        f"{best}: {chosen['shipped_reduction']:.1f}x fewer bytes shipped ({fp32_bytes / 1024:,.0f} KiB fp32 "
        f"ONNX -> {chosen['shipped_bytes'] / 1024:,.1f} KiB lzma); "
        f"clean {drop_text(models[best]['vs_fp32']['clean'])} "
        f"(paired {pct}% CI), robust {drop_text(robust) if robust else 'not measured'}; needs >= "
        f"{MIN_SHIPPED_REDUCTION:g}x at a drop <= {MAX_ACCURACY_DROP:g}"
    )
    measured = {"variant": best, **chosen, "fp32_onnx_bytes": fp32_bytes, "variants": variants}
    return target(
        description,
        measured,
        {"shipped_reduction": MIN_SHIPPED_REDUCTION, "drop_points": MAX_ACCURACY_DROP},
        chosen["shipped_reduction"] >= MIN_SHIPPED_REDUCTION,
        summary,
    )


def evaluate_targets(
    models: dict[str, dict[str, Any]],
    measured: dict[str, Measured],
    cfg: config.ValidationParams,
    pipeline: list[str],
) -> dict[str, dict[str, Any]]:
    """The targets for the final model, each with its measured values and pass/fail."""
    final = models[FINAL]
    clean, robust = final["vs_fp32"]["clean"], final["vs_fp32"]["robust"]
    drops = drop_figures(clean, robust)
    drop = drops["drop_points"]
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
            drops,
            MAX_ACCURACY_DROP,
            drop <= MAX_ACCURACY_DROP,
            f"clean {drop_text(clean)} (paired {pct}% CI, n={clean['n']:,}); needs point <= "
            f"{MAX_ACCURACY_DROP:g}; robust {drop_text(robust) if robust else 'not measured'}",
        ),
        "shipped_reduction_vs_fp32": shipped_target(models, pipeline, cfg),
    }
    for name in PEERS:
        peer = models[name]
        if "error" in peer:
            targets[f"beats_{name}"] = target(
                f"faster than {name} unless more accurate", None, None, None, f"not built: {peer['error']}"
            )
            continue
        vs = paired(measured[FINAL].scores, measured[name].scores, cfg)  # peer - ours
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
    packages = (
        "onnxruntime",
        "torch",
        "onnx",
        "torch-pruning",
        "nncf",
        "scikit-learn",
        "numpy",
        "kedro-edge",
    )
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


def add_columns(table: Table, columns: tuple[str, ...], labels: int = 1) -> None:
    """The first ``labels`` columns left-aligned (names), the rest right-aligned (figures)."""
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < labels else "right", no_wrap=i < labels)


def failed_row(table: Table, name: str, row: dict[str, Any], width: int, failures: list[str]) -> bool:
    """A row whose model failed: shown as such, its error kept for under the table."""
    if "error" not in row:
        return False
    table.add_row(name, "[red]failed[/]", *[""] * (width - 2))
    failures.append(f"[red]{name} failed:[/] {row['error']}")
    return True


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
        "shipped KiB",
        "shipped ×",
        "params",
        "MACs",
        "p50 ms",
        "p90 ms",
        "p50 ÷ fp32",
    )
    add_columns(table, columns)
    failures: list[str] = []
    for name, f in models.items():
        if failed_row(table, name, f, len(columns), failures):
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
            f"{f['shipped_bytes'] / 1024:,.1f}",
            f"{f['shipped_reduction']:.1f}",
            f"{f['params']:,}",
            f"{f['macs']:,}",
            f"{f['latency_p50_ms']:.3f}",
            f"{f['latency_p90_ms']:.3f}",
            f"{f['p50_ratio']:.3f}",
        )
    if failures:
        table.caption, table.caption_justify = "\n".join(failures), "left"
    return table


def ratio_text(value: float) -> str:
    return f"{value:.3f}" if value >= 0.01 else f"{value:.2g}"


def marginal_table(effects: list[dict[str, Any]], title: str) -> Table:
    """Each candidate against its base: what the technique(s) it adds did, paired on the same images."""
    table = Table(title=title)
    columns = (
        "model",
        "base",
        "adds",
        "Δ clean vs base pts [CI] p",
        "Δ robust vs base pts [CI] p",
        "KiB ÷ base",
        "shipped ÷ base",
        "MACs ÷ base",
        "p50 ÷ base",
        "rounds slower",
        "p50 vs base",
    )
    add_columns(table, columns, labels=3)
    for vs in effects:
        name = vs["model"]
        if "error" in vs:
            table.add_row(name, vs["base"], "+".join(vs["adds"]), f"[red]{vs['error']}[/]", *[""] * 7)
            continue
        rounds = len(vs["p50_ratio_rounds"])
        flag = "[green]faster[/]"
        if vs["slower"]:
            flag = "[red]▲ SLOWER[/]" if vs["rounds_slower"] == rounds else "[yellow]▲ slower (noisy)[/]"
        table.add_row(
            name,
            vs["base"],
            "+".join(vs["adds"]),
            diff_ci(vs["clean"]),
            diff_ci(vs["robust"]),
            ratio_text(vs["size_bytes_ratio"]),
            ratio_text(vs["shipped_bytes_ratio"]),
            ratio_text(vs["macs_ratio"]),
            f"{vs['p50_ratio']:.3f}",
            f"{vs['rounds_slower']}/{rounds}",
            flag,
        )
    return table


def print_slower(slower: list[dict[str, Any]]) -> None:
    """One line per candidate whose p50 is above its base's, with why its technique can do that."""
    if not slower:
        console.print("No candidate is slower at batch 1 than the model it was built from.")
        return
    console.print("[bold]Slower at batch 1 than the model it was built from (median p50 of the rounds):")
    for s in slower:
        if not s["in_every_round"]:
            console.print(
                f"  [yellow]~[/] {s['model']}: p50 {s['p50_ratio']:.3f}x {s['base']}'s, slower in only "
                f"{s['rounds_slower']} rounds: within run-to-run noise"
            )
            continue
        console.print(
            f"  [red]▲[/] {s['model']}: p50 {s['p50_ratio']:.2f}x {s['base']}'s "
            f"(slower in {s['rounds_slower']} rounds) at {s['macs_ratio']:.2f}x its MACs; "
            f"adds {'+'.join(s['adds'])}: {s['why']}"
        )


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    console.print(
        f"[bold]Targets (final model {FINAL}; shipped_reduction: the best pipeline variant within "
        f"{MAX_ACCURACY_DROP:g} pts):"
    )
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


def pipeline_figures(name: str, row: dict[str, Any]) -> StageFigures:
    """A model's row as the pipeline's stage figures: median latency, the fp32 comparison as vs_teacher."""
    known = {f.name for f in dataclasses.fields(StageFigures)}
    figures = {k: v for k, v in row.items() if k in known}
    figures["latency_runs"] = sum(row["latency_runs_per_round"])
    if row.get("vs_fp32"):
        figures["vs_teacher"] = {k: v for k, v in row["vs_fp32"].items() if v is not None}
    return StageFigures.from_json(figures, f"model {name}")


def save_plot(
    models: dict[str, dict[str, Any]], arch: str, test_n: int, confidence: float, path: Path
) -> None:
    """The pipeline's figure (``plots.compression_figure``) for the measured models, plus targets.

    Shipped size appears twice: in each model's legend entry (KiB after lzma) and as the green
    bars of the right panel (fp32 ONNX bytes / shipped bytes), with the shipped target as a line."""
    stages = {name: f for name, f in models.items() if "error" not in f}
    fig = plots.compression_figure(
        {name: pipeline_figures(name, f) for name, f in stages.items()}, test_n, confidence
    )
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
    for collection in ax.collections:  # each model's legend entry gets its shipped size too
        label = collection.get_label()
        name = label.split(": ", 1)[0]
        if name in stages and label.startswith(f"{name}: "):
            collection.set_label(f"{label} ONNX, {stages[name]['shipped_bytes'] / 1024:,.0f} KiB shipped")
    ax.set_title(f"{arch}: accuracy vs p50, 1 thread (hollow: robust; area ~ ONNX size)")
    # one full-width row per panel: with a dozen models, three panels side by side squash each other
    rows = fig.add_gridspec(3, 1, height_ratios=(1.25, 1, 1))
    ax.set_subplotspec(rows[0].subgridspec(1, 2, width_ratios=(1.5, 1))[0])
    legend = ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7.5, frameon=False)
    for handle in legend.legend_handles:  # one marker size in the legend (area ~ size is on the axes)
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([50])
    fig.axes[1].set_subplotspec(rows[1])
    fig.axes[1].set_title(f"paired change vs fp32, same {test_n:,} test images")
    fig.axes[1].set_ylabel("accuracy change vs fp32 (points)")
    gains = fig.axes[2]
    gains.set_subplotspec(rows[2])
    gains.axhline(
        MIN_SHIPPED_REDUCTION,
        color="tab:green",
        ls="--",
        lw=1,
        label=f"shipped target: {MIN_SHIPPED_REDUCTION:g}x fewer bytes than the fp32 ONNX",
    )
    gains.set_yscale("log")  # 1x to ~40x: bars of every size stay legible
    heights = [bar.get_height() for bar in gains.patches]
    # every bar in view (a slower model's speed-up is below 1) and room for the legend above them
    gains.set_ylim(min(0.3, 0.6 * min(heights)), max(MIN_SHIPPED_REDUCTION, *heights) * 8)
    gains.legend(loc="upper left", fontsize=8, ncols=4)
    gains.set_ylabel("gain over fp32 (x, log scale)")
    gains.set_title(
        "what each model gained over fp32; shipped = its ONNX file lzma-compressed, as a release sends it"
    )
    for text in gains.texts:  # the bar labels: small, so neighbours never overlap
        text.set_fontsize(7)
    for other in fig.axes[1:]:
        other.tick_params(axis="x", labelrotation=20)
        for label in other.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.set_size_inches(max(16.0, 4 + 1.1 * len(stages)), 16)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


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
    edges = lineage(candidates)
    effects, slower = marginal_effects(models, measured, validation, edges)
    pipeline = [c.name for c in candidates if c.states is not None]
    targets = evaluate_targets(models, measured, validation, pipeline)

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
    console.print(
        marginal_table(
            effects,
            f"{arch_name}: marginal effect of each technique, paired vs the candidate it is built from "
            "(ratios: candidate ÷ base, below 1 is smaller/faster)",
        )
    )
    print_slower(slower)
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
            "variants": {
                "peers_int8": PLAIN_INT8,
                "shipped_states": shipped_states(params),
                "pipeline_states": {c.name: c.states for c in candidates if c.states is not None},
                "note": "dotted keys set on the parameters below (each model's details.parameter_overrides); "
                "the pipeline variants reuse kedro_edge's distilled student, except the low-rank one "
                "(a second full pass)",
            },
            "lineage": [{"model": m, "base": b, "adds": list(a)} for m, b, a in edges],
            "shipped_codec": "lzma (kedro_edge.runtimes.codec.shipped_size)",
        },
        "parameters": params,
        "models": models,
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets.values() if t["passed"] is not None),
        "marginal_effects": effects,
        "slower_than_base": slower,
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
        split = nodes.split_dataset(raw, params["data"])
        if args.reuse_teacher is not None:
            data_info["teacher_split_checked_against"] = check_teacher_split(args.reuse_teacher, split)
        model_input = data.Splits(split).in_memory().arrays
        if args.quick:
            model_input = shrink_train(model_input, QUICK_TRAIN_SAMPLES)
    for arch_name in args.models:
        run_architecture(arch_name, args, model_input, data_info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
