"""Mixed-precision INT8: which layers of model.onnx stay float (``compression.quantize.exclude``).

A list of ONNX node names is taken as given, once checked against the model. ``auto`` measures
every weighted layer (Conv, Gemm, MatMul) on the VALIDATION split and on this host:

- accuracy: validation accuracy with only that layer quantized, against FP32. A layer that costs
  more than ``auto_max_layer_drop`` points stays float, wherever it is.
- speed: batch-1 p50 of the INT8 model with a float prefix ending at that layer (or a float
  suffix starting at it), as a ratio to the all-INT8 model. The fastest prefix and the fastest
  suffix stay float when they beat all-INT8 by ``SPEED_MARGIN``.

Prefixes and suffixes, not one layer at a time: ORT's CPU kernels run INT8 in NHWC and float in
NCHWc, so a float island inside an INT8 graph pays a DequantizeLinear, a QuantizeLinear and two
layout changes. On the MobileNetV2 here, keeping its depthwise convs float made INT8 2.8x slower;
keeping its first block float (a stem conv over one input channel, a 32x32 depthwise conv, a
projection and their residual Add) made it 11-20% faster than all-INT8: the 50%-pruned and the
half-width variants, whose default INT8 is 8-17% slower than FP32, became 5-14% faster than FP32.
At either end of the graph a float region costs one Q or DQ. The test split is never read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from pydantic import Field

from kedro_edge.compress.ptq import LAYER_OPS, Int8Quantizer, check_exclusions
from kedro_edge.compress.quantize import QuantizeParams
from kedro_edge.data import Splits
from kedro_edge.runtimes.onnxruntime import interleaved_ms, ort_predict, session
from kedro_edge.runtimes.timing import InterleavedTiming

# a float prefix or suffix must make the INT8 model at least this much faster to be kept
# (two sessions of one model differ by ~3% in a median of 5 repeats on this shared host)
SPEED_MARGIN = 0.03


class Timing(InterleavedTiming):
    """How ``sensitivity`` times models: ``blocks`` rounds, each with fresh sessions created in
    alternating order and queries interleaved; a ratio is the median over rounds."""

    # a session's memory layout alone moved its p50 by up to 10% here: hence rounds of new sessions
    blocks: int = Field(7, ge=1)
    min_runs: int = Field(700, ge=1)  # 100 batch-1 queries per model and round, after the warm-up
    min_seconds: float = Field(0.0, ge=0)
    patience: int = 2  # a prefix/suffix walk stops after this many layers without a new best below 1


TIMING = Timing()


def layer_names(fp32: onnx.ModelProto) -> list[str]:
    """The quantizable weighted nodes (Conv, Gemm, MatMul) by name, in graph order."""
    return [n.name for n in fp32.graph.node if n.op_type in LAYER_OPS]


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of ``x`` whose top class through ONNX Runtime is ``y``."""
    return float((ort_predict(session(model), x).argmax(1) == y).mean())


def block_p50_ms(models: list[onnx.ModelProto], x: np.ndarray, timing: Timing) -> np.ndarray:
    """Each model's batch-1 p50 in ms in each of ``timing.blocks`` rounds: shape (blocks, models).

    Every round opens fresh sessions, in alternating order, and interleaves their queries."""
    runs, seconds = timing.per_block()
    p50 = []
    for block in range(timing.blocks):
        order = list(range(len(models)))[:: 1 if block % 2 == 0 else -1]
        sessions = [session(models[i], timing.threads) for i in order]
        times = dict(zip(order, interleaved_ms(sessions, x[:32], timing.warmup, runs, seconds), strict=True))
        p50.append([float(np.median(times[i])) for i in range(len(models))])
    return np.asarray(p50)


def relative_p50(models: list[onnx.ModelProto], x: np.ndarray, timing: Timing) -> list[float]:
    """Each model's batch-1 p50 as a ratio to the first's: the median over ``timing.blocks``."""
    p50 = block_p50_ms(models, x, timing)
    return [float(r) for r in np.median(p50 / p50[:, :1], axis=0)]


def _walk(
    quantizer: Int8Quantizer, int8: onnx.ModelProto, order: list[str], x: np.ndarray, timing: Timing
) -> dict[str, float]:
    """Latency ratio to all-INT8 of the float regions ``order[:1]``, ``order[:2]``, ... (early stop)."""
    ratios: dict[str, float] = {}
    best, stale = 1.0, 0
    for k, name in enumerate(order, 1):
        ratios[name] = relative_p50([int8, quantizer.quantize(order[:k])], x, timing)[1]
        best, stale = (ratios[name], 0) if ratios[name] < best else (best, stale + 1)
        if stale >= timing.patience:
            break
    return ratios


def _sensitivity(
    quantizer: Int8Quantizer,
    fp32: onnx.ModelProto,
    val_x: np.ndarray,
    val_y: np.ndarray,
    timing: Timing | None,
) -> list[dict[str, Any]]:
    ops = {n.name: n.op_type for n in fp32.graph.node}
    layers = layer_names(fp32)
    base = accuracy(fp32, val_x, val_y)
    rows = []
    for name in layers:
        acc = accuracy(quantizer.quantize(only=[name]), val_x, val_y)
        rows.append(
            {
                "layer": name,
                "op_type": ops[name],
                "accuracy": acc,
                "drop_points": 100 * (base - acc),
                "latency_ratio": None,
                "latency_basis": None,
            }
        )
    if timing is not None and layers:
        int8 = quantizer.quantize()
        half = (len(layers) + 1) // 2
        walks = {
            "prefix": _walk(quantizer, int8, layers[:half], val_x, timing),
            "suffix": _walk(quantizer, int8, layers[half:][::-1], val_x, timing),
        }
        for row in rows:
            for basis, ratios in walks.items():
                if row["layer"] in ratios:
                    row.update(latency_ratio=ratios[row["layer"]], latency_basis=basis)
    return rows


def sensitivity(
    fp32: onnx.ModelProto,
    calibration: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cfg: QuantizeParams,
    timing: Timing | None = TIMING,
) -> list[dict[str, Any]]:
    """Per weighted layer, in graph order: what INT8 costs there in accuracy and in time.

    Returns dicts with ``layer``, ``op_type``; ``accuracy`` (fraction of ``val_x`` right with
    only this layer quantized) and ``drop_points`` (100 x the FP32 accuracy minus it); and
    ``latency_ratio``: batch-1 p50 of the INT8 model whose float ``latency_basis`` region —
    ``prefix`` (this layer and every one before it) or ``suffix`` (it and every one after) —
    over the all-INT8 p50 (below 1: INT8 loses time there). A walk starts at each end and stops
    when ``timing.patience`` layers in a row bring no new best below 1; the layers between get
    ``None``, as they all do with ``timing=None``.
    """
    with Int8Quantizer(fp32, calibration, cfg) as quantizer:
        return _sensitivity(quantizer, fp32, val_x, val_y, timing)


def choose_exclusions(sens: list[dict[str, Any]], cfg: QuantizeParams) -> tuple[list[str], dict[str, Any]]:
    """The layers to keep float, in graph order, and a report giving each one's reason.

    A layer stays float when quantizing it alone costs more than ``cfg.auto_max_layer_drop``
    validation points, or when it belongs to the fastest measured float prefix or suffix and
    that region makes the INT8 model at least ``SPEED_MARGIN`` faster.
    """
    reasons: dict[str, str] = {}
    for row in sens:
        if row["drop_points"] > cfg.auto_max_layer_drop:
            reasons[row["layer"]] = (
                f"accuracy: -{row['drop_points']:.2f} validation points when quantized alone "
                f"(auto_max_layer_drop {cfg.auto_max_layer_drop:g})"
            )
    for basis, rows in (("prefix", sens), ("suffix", sens[::-1])):
        walked = [row for row in rows if row["latency_basis"] == basis]  # in walk order
        if not walked:
            continue
        end = min(range(len(walked)), key=lambda i: walked[i]["latency_ratio"])
        ratio = walked[end]["latency_ratio"]
        if ratio <= 1 - SPEED_MARGIN:
            why = f"speed: the float {basis} of {end + 1} layer(s) runs at {ratio:.2f}x the all-INT8 p50 here"
            for row in walked[: end + 1]:
                reasons.setdefault(row["layer"], why)
    excluded = [row["layer"] for row in sens if row["layer"] in reasons]
    report = {
        "excluded": [{"layer": name, "reason": reasons[name]} for name in excluded],
        "layers": len(sens),
        "int8_layers": len(sens) - len(excluded),
        "auto_max_layer_drop": cfg.auto_max_layer_drop,
        "speed_margin": SPEED_MARGIN,
    }
    return excluded, report


def all_float(sens: list[dict[str, Any]], ratio: float) -> tuple[list[str], dict[str, Any]]:
    """Every layer float: the best INT8 model measured ``ratio`` times the FP32 p50, beyond the margin.

    Depthwise convs, hardswish and squeeze-excitation (MobileNetV3) run slower in ORT's INT8 QDQ
    kernels at batch 1 than in float; then no INT8 layer pays and model.onnx ships float."""
    why = f"speed: the best INT8 model runs at {ratio:.2f}x the FP32 p50 here: the whole model stays float"
    excluded = [row["layer"] for row in sens]
    return excluded, {
        "excluded": [{"layer": name, "reason": why} for name in excluded],
        "layers": len(sens),
        "int8_layers": 0,
        "speed_margin": SPEED_MARGIN,
    }


def resolve(
    fp32: onnx.ModelProto,
    calibration: np.ndarray,
    splits: Splits,
    cfg: QuantizeParams,
    timing: Timing | None = TIMING,
) -> tuple[list[str], dict[str, Any]]:
    """``cfg.exclude`` as node names for ``export.quantize_int8``, and how they were chosen.

    A list is checked (an unknown name is a ``ConfigError`` naming the key) and returned.
    ``"auto"``: ``sensitivity`` on the validation split, then ``choose_exclusions``; the chosen
    model is then timed against FP32 and against INT8 with only the accuracy exclusions, and the
    speed exclusions are dropped if they did not make it faster; if the chosen INT8 model is still
    slower than FP32 beyond ``SPEED_MARGIN``, every layer stays float (``int8_pays: false``).
    ``timing=None``: accuracy only.
    """
    if cfg.exclude != "auto":
        names = check_exclusions(fp32, cfg.exclude)
        listed = [{"layer": n, "reason": "listed in compression.quantize.exclude"} for n in names]
        layers = layer_names(fp32)
        int8 = len([n for n in layers if n not in names])
        return names, {"mode": "list", "excluded": listed, "layers": len(layers), "int8_layers": int8}
    val_x, val_y = splits.x("val"), splits.y("val")
    timed: dict[str, Any] = {}
    with Int8Quantizer(fp32, calibration, cfg) as quantizer:
        sens = _sensitivity(quantizer, fp32, val_x, val_y, timing)
        excluded, report = choose_exclusions(sens, cfg)
        chosen = quantizer.quantize(excluded)
        if timing is not None:
            for_accuracy, accuracy_report = choose_exclusions(
                [{**r, "latency_basis": None} for r in sens], cfg
            )
            plain = chosen if for_accuracy == excluded else quantizer.quantize(for_accuracy)
            ratios = relative_p50([fp32, chosen] if plain is chosen else [fp32, chosen, plain], val_x, timing)
            chosen_ratio, plain_ratio = ratios[1], ratios[-1]
            timed["p50_ratio_to_fp32"] = {
                "int8_chosen": chosen_ratio,
                "int8_accuracy_exclusions_only": plain_ratio,
            }
            if for_accuracy != excluded and chosen_ratio >= plain_ratio:
                timed["speed_exclusions_dropped"] = (
                    "the float regions did not make INT8 faster when timed together"
                )
                excluded, report, chosen = for_accuracy, accuracy_report, plain
                chosen_ratio = plain_ratio
            timed["int8_pays"] = chosen_ratio <= 1 + SPEED_MARGIN
            if not timed["int8_pays"]:
                excluded, report = all_float(sens, chosen_ratio)
                chosen = fp32
        val_accuracy = {"fp32": accuracy(fp32, val_x, val_y), "int8": accuracy(chosen, val_x, val_y)}
    return excluded, {
        "mode": "auto",
        "split": "val",
        "n": len(val_y),
        **report,
        **timed,
        "val_accuracy": val_accuracy,
        "sensitivity": sens,
    }
