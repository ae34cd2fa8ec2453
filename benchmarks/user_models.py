"""Benchmark: the user's own trained model, loaded from a checkpoint, against the peers (issue 22).

"The user's model" is a torchvision architecture with ImageNet-style normalisation, trained here
once and cached as a checkpoint file, then handed to the pipeline as a user would hand theirs:
``model.checkpoint`` + ``model.class_path`` (a torchvision builder) + ``data.preprocessing``. The
data are an RGB version of the default task at 96x96: the glyphs of ``kedro_edge.data.glyphs``
rendered at 96x96 and coloured (each image a random ink and paper colour, seeded), so the
channels and the per-channel mean/std matter.

Architectures (``--models``): ``resnet18`` and ``mobilenet_v3_small`` (``torchvision.models``,
random initialisation: nothing is downloaded). Each is trained by the project's ``fit`` with early
stopping on the validation split (``USER_TRAINING``), and saved as a checkpoint dict
``{"state_dict": ..., "epochs": ...}`` under ``<out-dir>/cache/`` with a sidecar JSON giving the
seed, the epochs run, the training time and the validation accuracy; later runs load it (the cache
key is the data spec, the architecture and the training settings).

Models, in one run, measured the same way (``kedro_edge.evaluation.stage.evaluate_stage``):

- ``fp32``                   the loaded checkpoint exported to ONNX (FP32);
- ``ort_int8_only``          ONNX Runtime ``quantize_static`` (QDQ) of it, the pipeline's calibration set;
- ``nncf_ptq``               NNCF ``nncf.quantize`` on the FP32 ONNX model, the same calibration set;
- ``nncf_accuracy_control``  NNCF ``quantize_with_accuracy_control`` at the pipeline's budget
                             (``validation.gates.max_accuracy_drop`` points, absolute, on the
                             validation split);
- ``tp_prune_only``          Torch-Pruning with fine-tuning alone at the chosen ratio: the
                             pipeline's prune stage (iterative, ``compression.prune``) with the
                             L2 magnitude importance and a fine-tune on the labels, whatever the
                             pipeline's ``importance`` and ``recover`` say, FP32 ONNX;
- ``kedro_edge``             this pipeline's ``model.onnx`` from the checkpoint with the shipped
                             ``conf/base`` compression parameters, the prune ratio chosen on the
                             validation split as a user would: the shipped ratio, else half of it,
                             else a quarter, the first whose ``model.onnx`` loses at most the budget
                             (1.0 point, which NNCF's accuracy control also gets) against fp32 on
                             the validation images: prune -> QAT -> distill from the
                             loaded teacher -> cluster -> static INT8;
- ``kedro_edge+mixed``       the same student exported with ``quantize.exclude: auto`` (mixed
                             precision: layers whose INT8 costs accuracy or time stay float).

Columns: clean and robust test accuracy with Wilson intervals and n, paired change vs fp32
(paired bootstrap interval, exact McNemar p), ONNX size, shipped bytes (lzma, as a release sends
it), params, MACs, p50/p90 at batch 1 on one thread and p50 as a ratio to fp32, measured in
interleaved rounds (the order reversed every other round; the median of the rounds is reported),
and the pipeline's wall time from loading the checkpoint to ``model.onnx``.

Targets. ResNet-18: ``kedro_edge`` p50 at least 6x lower than fp32 and at least 2x lower than
the best PTQ peer's (``ort_int8_only``, ``nncf_ptq``, ``nncf_accuracy_control``), at a clean drop
whose point estimate is at most 1.0 point. MobileNetV3-Small, for ``kedro_edge`` and for
``kedro_edge+mixed`` each: against every peer, faster unless the peer is more accurate by the
paired interval (peer minus ours entirely above 0), or as fast (within 3%) and more accurate by
it; a peer faster but less accurate by the paired interval is not at equal accuracy and gets no
verdict; where INT8 does not pay (a PTQ peer no faster than fp32) the JSON and the printout say so,
with what ``kedro_edge+mixed`` kept in float and why.

torchvision from PyPI does not import beside this machine's CPU torch (``../shared/PITFALLS.md``):
the script installs the two missing op schemas first (``tests/torchvision_shim.py``), the same
way the tests do. Writes ``benchmarks/results/user_models_<model>.json`` and ``.png``; exits 0
whether or not the targets pass. Run from the project root on an otherwise idle machine
(``nncf`` is in the ``bench`` extra: ``pip install -e .[bench]``):

    .venv/bin/python benchmarks/user_models.py [--models resnet18,mobilenet_v3_small] [--quick]
        [--train-only] [--rounds N] [--out-dir DIR] [--set compression.prune.ratio=0.25 --tag r025]

``--train-only`` trains and caches the users' checkpoints and stops. ``--quick`` is a smoke test
(a small data set, one epoch everywhere, short latency runs): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import torchvision_shim  # noqa: E402  (test-only helper: lets PyPI's torchvision import here)

torchvision_shim.install()

import compression as bench  # noqa: E402  (benchmarks/compression.py: peers, measurement, tables)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from kedro_edge import config, data, nodes  # noqa: E402
from kedro_edge.evaluation import plots, robustness  # noqa: E402
from kedro_edge.io import GlyphsDataset  # noqa: E402
from kedro_edge.runtimes import onnx_export  # noqa: E402

console = bench.console
FP32, FINAL, MIXED = bench.FP32, bench.FINAL, "kedro_edge+mixed"
PTQ_PEERS = ("ort_int8_only", "nncf_ptq", "nncf_accuracy_control")
PEERS = (*PTQ_PEERS, "tp_prune_only")

IMAGE_SIZE = 96
SEVERITY = 1.0  # the default task's distortions (catalog.yml raw_images)
N_PER_CLASS, QUICK_N_PER_CLASS = 1000, 60  # 10,000 images: train 6,400, val 1,000, test 2,600
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
USER_MODELS = {  # the builder and how "the user" trained it (fit: AdamW, early stopping on val)
    "resnet18": {"class_path": "torchvision.models.resnet18", "epochs": 8},
    "mobilenet_v3_small": {"class_path": "torchvision.models.mobilenet_v3_small", "epochs": 16},
}
USER_TRAINING = {"seed": 0, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0005, "patience": 3}

# batch 1 on one thread: ResNet-18 at 96x96 runs ~10 ms in FP32, so fewer runs than compression.py's
LATENCY = config.TimingSpec(threads=1, warmup=30, min_runs=300, min_seconds=1.0)
QUICK_LATENCY = bench.QUICK_LATENCY
ROUNDS, QUICK_ROUNDS = 3, 2

MIN_SPEEDUP = 6.0  # resnet18: fp32 p50 / kedro_edge p50
MIN_VS_PTQ = 2.0  # resnet18: best PTQ peer p50 / kedro_edge p50
MAX_DROP = 1.0  # clean points below fp32 (point estimate)
SPEED_MARGIN = 0.03  # "as fast": within the run-to-run spread of one model's p50 (mixed_precision's margin)


# --- data and the user's checkpoint ----------------------------------------------------------


def colour(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, [1,] H, W) grey glyphs (uint8, or floats in 0..1) -> (N, H, W, 3) uint8 RGB: each image
    gets its own ink and paper colour, the ink darker than the paper in every channel (a printed
    letter under varying light), so colour carries no class information."""
    rng = np.random.default_rng(seed)
    ink = rng.integers(0, 112, size=(len(images), 3)).astype(np.float32)
    paper = rng.integers(144, 256, size=(len(images), 3)).astype(np.float32)
    grey = images.reshape(len(images), *images.shape[-2:]).astype(np.float32)  # (N, [1,] H, W)
    t = (grey / 255 if images.dtype == np.uint8 else grey)[..., None]  # GlyphsDataset loads 0..1 floats
    rgb = paper[:, None, None, :] * (1 - t) + ink[:, None, None, :] * t
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def user_data(cache: Path, quick: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The coloured 96x96 glyphs (generated once into ``cache``)."""
    n = QUICK_N_PER_CLASS if quick else N_PER_CLASS
    path = cache / f"glyphs{IMAGE_SIZE}_{n}_{SEVERITY:g}.npz"
    raw = GlyphsDataset(str(path), n_per_class=n, size=IMAGE_SIZE, seed=0, severity=SEVERITY).load()
    info = {
        "glyphs": str(path),
        "n_per_class": n,
        "size": IMAGE_SIZE,
        "seed": 0,
        "severity": 1.0,
        "colour": "per image ink (0..111) / paper (144..255) RGB: benchmarks/user_models.colour, seed 0",
    }
    return {"images": colour(raw["images"]), "labels": raw["labels"]}, info


def parameters(arch: str, checkpoint: Path | None, quick: bool) -> dict[str, Any]:
    """The shipped parameters with the user's model, image size and input contract."""
    params = bench.load_parameters(bench.Architecture(None, ""), quick)
    params["data"] = {**params["data"], "image_size": IMAGE_SIZE, "preprocessing": dict(IMAGENET)}
    params["model"] = {"class_path": USER_MODELS[arch]["class_path"], "kwargs": {}}
    # the user's accuracy budget (the targets' MAX_DROP), stated once: the release gate, NNCF's
    # accuracy control and the choice of the prune ratio on the validation split all use it
    params["validation"]["gates"]["max_accuracy_drop"] = MAX_DROP
    if checkpoint is not None:
        params["model"]["checkpoint"] = str(checkpoint)
    config.validate_parameters(params)
    return params


def user_checkpoint(
    arch: str, model_input: dict[str, np.ndarray], data_info: dict, cache: Path, quick: bool
) -> tuple[Path, dict[str, Any]]:
    """The user's trained checkpoint: trained once (``USER_TRAINING``), then loaded from the cache."""
    training = {**USER_TRAINING, "epochs": 1 if quick else USER_MODELS[arch]["epochs"]}
    key = hashlib.sha256(
        json.dumps([arch, USER_MODELS[arch]["class_path"], training, data_info], sort_keys=True).encode()
    ).hexdigest()[:12]
    path, sidecar = cache / f"user_{arch}_{key}.pth", cache / f"user_{arch}_{key}.json"
    if path.is_file() and sidecar.is_file():
        console.print(f"[green]  cached[/] {path.name}: the user's {arch}")
        return path, json.loads(sidecar.read_text())
    params = parameters(arch, None, quick)
    bench.seed_everything(training["seed"])
    start = time.perf_counter()
    model, _ = nodes.train_teacher(model_input, params["model"], {**params["training"], **training})
    seconds = time.perf_counter() - start
    splits = data.Splits(model_input)
    with torch.no_grad():
        val = float((model(torch.from_numpy(splits.x("val"))).argmax(1).numpy() == splits.y("val")).mean())
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "epochs_max": training["epochs"]}, tmp)
    tmp.replace(path)
    info = {
        "checkpoint": str(path),
        "class_path": USER_MODELS[arch]["class_path"],
        "training": training,
        "optimizer": "kedro_edge.models.training.fit (AdamW, early stopping on val accuracy)",
        "train_seconds": round(seconds, 1),
        "val_accuracy": val,
        "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
    }
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    console.print(f"[green]  trained[/] {arch} in {seconds:.0f} s, val {100 * val:.2f} %: {path.name}")
    return path, info


# --- the candidates ----------------------------------------------------------------------------


def build_candidates(
    params: dict, model_input: dict[str, np.ndarray], timings: dict[str, float]
) -> tuple[list[bench.Candidate], dict[str, Any]]:
    """fp32, the peers and the pipeline's model, all from the user's checkpoint; the pipeline's
    wall time and reports."""
    comp, train = params["compression"], params["training"]
    cfg = config.parse(config.CompressionParams, comp, "compression")
    gates = config.parse(config.ValidationParams, params["validation"], "validation").gates
    max_drop = gates.max_accuracy_drop if gates.max_accuracy_drop is not None else MAX_DROP
    batch = params["validation"].get("batch_size", 256)
    splits = data.Splits(model_input)
    calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
    plain_int8 = cfg.quantize.model_copy(update={"exclude": []})
    pipeline_phases: list[str] = []

    def pipeline_phase(name: str):
        pipeline_phases.append(name)
        return bench.phase(name, timings)

    with pipeline_phase("pipeline: load the user's checkpoint (model.checkpoint)"):
        teacher, source = nodes.train_teacher(model_input, params["model"], params["training"])
    with bench.phase("export fp32", timings):
        teacher_onnx = nodes.export_teacher(teacher, model_input, comp)
    fp32 = bench.Candidate(
        FP32, f"the user's checkpoint ({source['kind']}), FP32 ONNX", teacher_onnx, teacher
    )
    int8_only, nncf_ptq, control = bench.ptq_peers(
        teacher, teacher_onnx, calib, plain_int8, splits, max_drop, batch, timings
    )
    attempts: list[dict[str, Any]] = []
    for ratio in ratios(params):
        run_params = bench.variant(params, {"compression.prune.ratio": ratio})
        started = time.perf_counter()
        with pipeline_phase(f"pipeline at prune ratio {ratio:g}: prune + fine-tune (also tp_prune_only)"):
            pruned, prune_report = nodes.apply_technique(
                "prune", teacher, teacher, model_input, run_params["compression"], train
            )
        with pipeline_phase(f"pipeline at prune ratio {ratio:g}: QAT -> distill -> cluster -> static INT8"):
            final, student = bench.pipeline_run(teacher, model_input, run_params, pruned)
        attempts.append(
            {
                "ratio": ratio,
                **val_drop(teacher_onnx, final.onnx_model, splits),
                "seconds": time.perf_counter() - started,
            }
        )
        console.print(
            f"  validation: prune ratio {ratio:g} -> {attempts[-1]['val_drop_points']:+.2f} points below "
            f"fp32 (budget {max_drop:g}): {'kept' if attempts[-1]['within_budget'] else 'too costly'}"
        )
        if attempts[-1]["within_budget"]:
            break
    params["compression"] = run_params["compression"]  # the chosen ratio, for the mixed export
    plain = {"compression.prune.importance": "l2", "compression.prune.recover": "labels"}
    plain_params = bench.variant(run_params, plain)

    def prune_cfg(p: dict) -> Any:
        return config.parse(config.CompressionParams, p["compression"], "compression").prune

    if prune_cfg(plain_params) != prune_cfg(run_params):
        with bench.phase(
            "Torch-Pruning + fine-tune on the labels at the chosen ratio (tp_prune_only)", timings
        ):
            pruned, _ = nodes.apply_technique(
                "prune", teacher, teacher, model_input, plain_params["compression"], train
            )
    with bench.phase("export the pruned model (tp_prune_only)", timings):
        pruned_onnx = onnx_export.to_onnx(pruned, splits.input_shape, cfg.export.opset)
    final.details = {**(final.details or {}), "prune_report": prune_report, "ratio_choice": attempts}
    mixed_comp = bench.variant(params, bench.MIXED)["compression"]
    mixed = bench.Candidate(MIXED, "kedro_edge's model exported with quantize.exclude: auto")

    def build_mixed() -> bench.Built:
        model, report = nodes.export_model(final.module, model_input, mixed_comp)
        return model, final.module, {"quantize_report": report}

    with bench.phase("mixed-precision export of kedro_edge's model (kedro_edge+mixed)", timings):
        bench.attempt(mixed, build_mixed)
    candidates = [
        fp32,
        int8_only,
        nncf_ptq,
        control,
        bench.Candidate(
            "tp_prune_only",
            "Torch-Pruning (L2) + fine-tune on the labels at the chosen ratio, FP32 ONNX",
            pruned_onnx,
            pruned,
        ),
        final,
        mixed,
    ]
    chosen = [p for p in pipeline_phases if f"ratio {attempts[-1]['ratio']:g}:" in p or "ratio" not in p]
    pipeline = {
        "wall_seconds": round(sum(timings[p] for p in chosen), 1),
        "wall_seconds_with_rejected_ratios": round(sum(timings[p] for p in pipeline_phases), 1),
        "ratio_choice": attempts,
        "phases": {p: timings[p] for p in pipeline_phases},
        "teacher_source": source,
    }
    return candidates, pipeline


def ratios(params: dict) -> list[float]:
    """The prune ratios tried, in order: the shipped one, then half of it, then a quarter (what a
    user does when the validation split says the shipped ratio costs more than the budget)."""
    shipped = params["compression"]["prune"]["ratio"]
    return [round(shipped / 2**i, 4) for i in range(3)]


def val_drop(reference, candidate, splits: data.Splits) -> dict[str, Any]:
    """Validation points the candidate ONNX model loses against the reference (same images); the
    test split stays unseen by the choice."""
    from kedro_edge.search.trial import correct

    ref = correct(reference.SerializeToString(), splits, "val")
    cand = correct(candidate.SerializeToString(), splits, "val")
    drop = round(100 * (ref.mean() - cand.mean()), 4)
    return {
        "val_n": int(len(ref)),
        "fp32_val_accuracy": float(ref.mean()),
        "val_accuracy": float(cand.mean()),
        "val_drop_points": drop,
        "within_budget": drop <= MAX_DROP,
    }


# --- targets -----------------------------------------------------------------------------------


def peer_comparison(
    name: str, models: dict, measured: dict, cfg: config.ValidationParams, ours: str = FINAL
) -> dict[str, Any]:
    """A peer against ours on the same test images: p50 ratio and the paired accuracy change."""
    vs = bench.paired(measured[ours].scores, measured[name].scores, cfg)  # peer - ours
    return {
        "peer_p50_over_ours": models[name]["latency_p50_ms"] / models[ours]["latency_p50_ms"],
        "peer_minus_ours_points": vs["diff_points"],
        "ci_points": [vs["ci_low_points"], vs["ci_high_points"]],
        "mcnemar_p": vs["p_value"],
        "peer_more_accurate": vs["ci_low_points"] > 0,
    }


def evaluate_targets(
    arch: str, models: dict, measured: dict, cfg: config.ValidationParams
) -> dict[str, dict[str, Any]]:
    final = models[FINAL]
    clean, robust = final["vs_fp32"]["clean"], final["vs_fp32"]["robust"]
    drops = bench.drop_figures(clean, robust)
    targets: dict[str, dict[str, Any]] = {
        "accuracy_drop_vs_fp32": bench.target(
            f"kedro_edge's clean test accuracy at most {MAX_DROP:g} points below fp32 (point estimate)",
            drops,
            MAX_DROP,
            drops["drop_points"] <= MAX_DROP,
            f"clean {bench.drop_text(clean)} (n={clean['n']:,}); robust "
            f"{bench.drop_text(robust) if robust else 'not measured'}",
        )
    }
    comparisons = {n: peer_comparison(n, models, measured, cfg) for n in PEERS if "error" not in models[n]}
    if arch == "resnet18":
        targets["p50_speedup_vs_fp32"] = bench.target(
            f"kedro_edge p50 at least {MIN_SPEEDUP:g}x lower than fp32",
            final["p50_speedup"],
            MIN_SPEEDUP,
            final["p50_speedup"] >= MIN_SPEEDUP,
            f"{final['p50_speedup']:.2f}x ({models[FP32]['latency_p50_ms']:.3f} -> "
            f"{final['latency_p50_ms']:.3f} ms)",
        )
        ptq_built = [n for n in PTQ_PEERS if n in comparisons]
        best = min(ptq_built, key=lambda n: models[n]["latency_p50_ms"], default=None)
        ratio = comparisons[best]["peer_p50_over_ours"] if best else None
        targets["p50_vs_best_ptq_peer"] = bench.target(
            f"kedro_edge p50 at least {MIN_VS_PTQ:g}x lower than the fastest PTQ peer's",
            {"peer": best, **(comparisons[best] if best else {})},
            MIN_VS_PTQ,
            None if best is None else ratio >= MIN_VS_PTQ,
            "no PTQ peer built"
            if best is None
            else f"{best} {models[best]['latency_p50_ms']:.3f} ms = {ratio:.2f}x kedro_edge's",
        )
    else:  # MobileNetV3-Small: the shipped pipeline and its mixed-precision export, each against every peer
        for ours in (FINAL, MIXED):
            if "error" in models.get(ours, {"error": "not built"}):
                continue
            for name in comparisons:
                targets[f"{ours}_beats_{name}"] = beats(name, ours, models, measured, cfg)
    return targets


def beats(name: str, ours: str, models: dict, measured: dict, cfg: config.ValidationParams) -> dict[str, Any]:
    """Ours beats a peer at equal accuracy: faster while the peer is not more accurate by the paired
    interval; or, at the same speed (within ``SPEED_MARGIN``), more accurate by that interval. A peer
    less accurate by the paired interval is not at equal accuracy: no verdict."""
    vs = peer_comparison(name, models, measured, cfg, ours)
    faster = vs["peer_p50_over_ours"] > 1
    more_accurate = vs["ci_points"][1] < 0  # peer - ours entirely below 0
    as_fast = vs["peer_p50_over_ours"] >= 1 - SPEED_MARGIN
    summary = (
        f"{name} p50 = {vs['peer_p50_over_ours']:.2f}x {ours}'s; {name} - {ours} "
        f"{vs['peer_minus_ours_points']:+.2f} pts [{vs['ci_points'][0]:+.2f}, {vs['ci_points'][1]:+.2f}]"
    )
    passed = (faster and not vs["peer_more_accurate"]) or (as_fast and more_accurate)
    if more_accurate and not passed:
        passed, summary = None, f"not at equal accuracy: {summary}"
    return bench.target(
        f"{ours} faster than {name} unless {name} is more accurate (paired CI above 0), or as fast "
        f"(within {SPEED_MARGIN:.0%}) and more accurate (paired CI below 0); no verdict when {name} "
        "is less accurate by the paired CI and faster (not at equal accuracy)",
        {**vs, "ours_more_accurate": more_accurate},
        {"peer_p50_over_ours": "> 1", "peer_more_accurate": False},
        passed,
        summary,
    )


def int8_pays(models: dict) -> dict[str, Any]:
    """Where INT8 alone does not pay (a PTQ peer not faster than fp32) and what mixed precision kept
    in float (kedro_edge+mixed's quantize report)."""
    out: dict[str, Any] = {
        name: {"p50_ratio_vs_fp32": models[name]["p50_ratio"], "pays": models[name]["p50_ratio"] < 1}
        for name in PTQ_PEERS
        if "error" not in models[name]
    }
    row = models.get(MIXED, {})
    report = (row.get("details") or {}).get("quantize_report") or {}
    out["mixed"] = {
        "p50_ratio_vs_kedro_edge": row["latency_p50_ms"] / models[FINAL]["latency_p50_ms"]
        if "latency_p50_ms" in row
        else None,
        "excluded": report.get("excluded"),
        "auto": report.get("auto"),
    }
    return out


# --- output ------------------------------------------------------------------------------------


def save_plot(models: dict, arch: str, test_n: int, confidence: float, path: Path) -> None:
    """The pipeline's compression figure for the measured models, with the targets' lines."""
    stages = {name: f for name, f in models.items() if "error" not in f}
    fig = plots.compression_figure(
        {name: bench.pipeline_figures(name, f) for name, f in stages.items()}, test_n, confidence
    )
    ax, ref = fig.axes[0], stages[FP32]
    if arch == "resnet18":
        ax.axvline(
            ref["latency_p50_ms"] / MIN_SPEEDUP, color="grey", ls="--", lw=1, label=f"{MIN_SPEEDUP:g}x fp32"
        )
    ax.axhline(100 * ref["accuracy"] - MAX_DROP, color="grey", ls=":", lw=1, label=f"fp32 - {MAX_DROP:g} pts")
    ax.set_title(f"the user's {arch} ({IMAGE_SIZE}x{IMAGE_SIZE} RGB): accuracy vs p50, 1 thread")
    ax.legend(loc="best", fontsize=7)
    fig.set_size_inches(16, 12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def run(arch: str, args: argparse.Namespace, model_input: dict, data_info: dict) -> None:
    timings: dict[str, float] = {}
    console.rule(f"[bold]the user's {arch}")
    checkpoint, trained = user_checkpoint(arch, model_input, data_info, args.out_dir / "cache", args.quick)
    if args.train_only:
        return
    bench.seed_everything()
    params = bench.variant(parameters(arch, checkpoint, args.quick), args.overrides)
    validation = config.parse(config.ValidationParams, params["validation"], "validation")
    latency = QUICK_LATENCY if args.quick else LATENCY
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    splits = data.Splits(model_input)
    candidates, pipeline = build_candidates(params, model_input, timings)
    robust_x = (
        robustness.perturbed_copy(splits.x("test"), validation.robustness, splits.preprocessing)
        if validation.robustness.enabled
        else None
    )
    with bench.phase(f"measure {len(candidates)} models x {rounds} interleaved rounds", timings):
        measured = bench.measure(candidates, splits, robust_x, latency, rounds, validation)
    models = bench.assemble(candidates, measured, validation)
    targets = evaluate_targets(arch, models, measured, validation)
    pays = int8_pays(models)
    n = len(splits.y("test"))
    console.print(
        bench.results_table(
            models,
            f"the user's {arch} from its checkpoint: test n={n:,}, {round(100 * validation.confidence)}% "
            f"intervals, paired vs fp32; ORT batch 1, {latency.threads} thread, median of {rounds} rounds",
        )
    )
    console.print(f"pipeline wall time (checkpoint -> model.onnx): {pipeline['wall_seconds']:.0f} s")
    for name, verdict in pays.items():
        if name != "mixed":
            console.print(
                f"INT8 alone ({name}): p50 {verdict['p50_ratio_vs_fp32']:.2f}x fp32: "
                f"{'pays' if verdict['pays'] else 'does NOT pay'}"
            )
    kept = pays["mixed"]["excluded"] or []
    reasons = sorted({row["reason"] for row in kept})
    console.print(f"mixed precision (kedro_edge+mixed): {len(kept)} layer(s) float: {'; '.join(reasons)}")
    bench.print_nncf_control(models)
    bench.print_targets(targets)
    report = {
        "benchmark": "user_models",
        "architecture": arch,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": bench.machine(),
        "settings": {
            "data": data_info,
            "samples": {split: len(splits.y(split)) for split in data.SPLITS},
            "user_training": trained,
            "latency": latency.model_dump(),
            "rounds": rounds,
            "confidence": validation.confidence,
            "robustness": validation.robustness.model_dump() if validation.robustness.enabled else None,
            "torch_threads": torch.get_num_threads(),
        },
        "parameter_overrides": args.overrides,
        "parameters": params,
        "pipeline": pipeline,
        "models": models,
        "int8_pays": pays,
        "targets": targets,
        "all_targets_passed": all(t["passed"] for t in targets.values() if t["passed"] is not None),
        "phase_seconds": timings,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"user_models_{arch}{'_' + args.tag if args.tag else ''}"
    json_path, png_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    save_plot(models, arch, n, validation.confidence, png_path)
    console.print(f"Wrote {json_path} and {png_path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", "--model", dest="models", default=",".join(USER_MODELS), metavar="NAMES")
    parser.add_argument("--quick", action="store_true", help="smoke test: its figures mean nothing")
    parser.add_argument(
        "--train-only", action="store_true", help="train and cache the checkpoints, then stop"
    )
    parser.add_argument("--rounds", type=int, help=f"interleaved latency rounds (default {ROUNDS})")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the pipeline (dotted key, YAML value), e.g. compression.prune.ratio=0.25",
    )
    parser.add_argument("--tag", help="suffix of the result files (user_models_<model>_<tag>.json)")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in USER_MODELS]
    if unknown or not args.models:
        parser.error(f"--models: choose from {', '.join(USER_MODELS)} (got {unknown or 'none'})")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.overrides = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        args.overrides[key.strip()] = yaml.safe_load(value)
    return args


def main() -> int:
    args = parse_args()
    if args.quick:
        console.print("[yellow]--quick: smoke test, the figures below mean nothing")
    timings: dict[str, float] = {}
    with bench.phase("generate/load + split the 96x96 RGB glyphs", timings):
        raw, data_info = user_data(args.out_dir / "cache", args.quick)
        split = nodes.split_dataset(raw, parameters(args.models[0], None, args.quick)["data"])
        model_input = data.Splits(split).in_memory().arrays
    for arch in args.models:
        run(arch, args, model_input, data_info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
