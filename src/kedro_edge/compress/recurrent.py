"""Recurrent layers of model.onnx: an LSTM dynamically quantized where it pays here, GRU/RNN float.

The static QDQ pass (``compress.ptq``) leaves LSTM, GRU and RNN nodes float: ONNX Runtime has no
QDQ kernel for them. Its dynamic quantizer has one for LSTM (``DynamicQuantizeLSTM``, com.microsoft:
int8 weights, the activations quantized on each call) and none for GRU or RNN. Run on the INT8
graph, ``quantize_dynamic`` would also rewrite every Gemm into MatMul + Add; on the float graph
first, the static pass cannot infer the contrib op's shapes. So each LSTM is quantized dynamically
in the FP32 graph and that one node, with its int8 weights, replaces the float LSTM of the INT8
graph. It is kept only when it makes the model faster on this host (batch-1 p50, interleaved with
fresh sessions, as ``compress.mixed_precision`` times) by ``SPEED_MARGIN`` and costs at most
``compression.quantize.auto_max_layer_drop`` validation points; the quantize report says which.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from kedro_edge.compress.mixed_precision import SPEED_MARGIN, TIMING, Timing, accuracy, block_p50_ms
from kedro_edge.compress.quantize import QuantizeParams
from kedro_edge.data import Splits
from kedro_edge.runtimes.onnx_export import check

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
DYNAMIC_OP, DYNAMIC_DOMAIN = "DynamicQuantizeLSTM", "com.microsoft"
NO_KERNEL = "no ONNX Runtime kernel (LSTM only): stays float"
# DynamicQuantizeLSTM's inputs: the LSTM's, with int8 W and R, then W's and R's scales and zero points
_WEIGHTS = (1, 2, 8, 9, 10, 11)


def recurrent_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The LSTM, GRU and RNN nodes of ``model``, in graph order."""
    return [n for n in model.graph.node if n.op_type in RECURRENT_OPS]


def dynamic_lstms(fp32: onnx.ModelProto, per_channel: bool) -> onnx.ModelProto:
    """``fp32`` with its LSTMs dynamically quantized (ORT's ``quantize_dynamic``, LSTM only)."""
    with tempfile.TemporaryDirectory(prefix="kedro-edge-lstm-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "lstm.onnx"
        onnx.save(fp32, src)
        quantize_dynamic(
            src, dst, op_types_to_quantize=["LSTM"], per_channel=per_channel, weight_type=QuantType.QInt8
        )
        return onnx.load(dst)


def with_dynamic_lstm(int8: onnx.ModelProto, dynamic: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """``int8`` with its LSTM nodes ``names`` replaced by their ``DynamicQuantizeLSTM`` of ``dynamic``
    (``dynamic_lstms`` of the same FP32 graph): the rest of the static graph is left as it is."""
    model = onnx.ModelProto()
    model.CopyFrom(int8)
    quantized = {n.name: n for n in dynamic.graph.node if n.op_type == DYNAMIC_OP}
    weights = {t.name: t for t in dynamic.graph.initializer}
    have = {t.name for t in model.graph.initializer}
    for i, node in enumerate(model.graph.node):
        if node.name not in names:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(quantized[f"{node.name}_quant"])
        inputs = [*node.input, *[""] * (12 - len(node.input))]  # its activations, bias, h0, c0 as they are
        for k in _WEIGHTS:
            inputs[k] = new.input[k]
            if new.input[k] not in have:
                model.graph.initializer.append(weights[new.input[k]])
                have.add(new.input[k])
        new.ClearField("input")
        new.input.extend(inputs)
        new.ClearField("output")
        new.output.extend(node.output)
        model.graph.node.remove(node)
        model.graph.node.insert(i, new)
    used = {i for n in model.graph.node for i in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]  # the float W and R
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    if DYNAMIC_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(onnx.helper.make_opsetid(DYNAMIC_DOMAIN, 1))
    return check(model)


def quantize_recurrent(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    splits: Splits,
    cfg: QuantizeParams,
    timing: Timing | None = TIMING,
) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """``int8`` with each LSTM dynamically quantized where that pays, and one report row per
    recurrent node (``node``, ``op``, ``dynamic_int8``: ``kept``, ``not kept`` or why not tried).

    Each LSTM in turn, on top of the ones kept before it: the model with it dynamic is timed
    against the model without it and scored on the validation split (``p50_ms_float``,
    ``p50_ms_dynamic``, ``val_drop_points``, ``reason``). ``timing=None``: accuracy only, and an
    LSTM is then kept when its drop is within ``cfg.auto_max_layer_drop``. An LSTM named in
    ``cfg.exclude`` stays float.
    """
    nodes = recurrent_nodes(int8)
    rows: list[dict[str, Any]] = [
        {"node": n.name, "op": n.op_type, "dynamic_int8": NO_KERNEL} for n in nodes if n.op_type != "LSTM"
    ]
    lstms = [n.name for n in nodes if n.op_type == "LSTM"]
    if not lstms:
        return int8, rows
    excluded = set(cfg.exclude) if isinstance(cfg.exclude, list) else set()
    dynamic = dynamic_lstms(fp32, cfg.per_channel)
    quantizable = {n.name.removesuffix("_quant") for n in dynamic.graph.node if n.op_type == DYNAMIC_OP}
    val_x, val_y = splits.x("val"), splits.y("val")
    current, kept = int8, []
    current_acc = accuracy(int8, val_x, val_y)
    for name in lstms:
        row: dict[str, Any] = {"node": name, "op": "LSTM"}
        rows.append(row)
        if name in excluded:
            row.update(dynamic_int8="not kept", reason="listed in compression.quantize.exclude")
            continue
        if name not in quantizable:
            row.update(
                dynamic_int8="not kept", reason="the dynamic quantizer left it float (weights not constant)"
            )
            continue
        candidate = with_dynamic_lstm(int8, dynamic, [*kept, name])
        acc = accuracy(candidate, val_x, val_y)
        row["val_drop_points"] = 100 * (current_acc - acc)
        ratio = None
        if timing is not None:
            p50 = np.median(block_p50_ms([current, candidate], val_x, timing), axis=0)
            ratio = float(p50[1] / p50[0])
            row.update(p50_ms_float=float(p50[0]), p50_ms_dynamic=float(p50[1]))
        reason = _why_not(row["val_drop_points"], ratio, cfg)
        row.update(dynamic_int8="not kept" if reason else "kept", reason=reason or _why_kept(ratio))
        if not reason:
            current, current_acc, kept = candidate, acc, [*kept, name]
    order = {n.name: i for i, n in enumerate(nodes)}
    return current, sorted(rows, key=lambda r: order[r["node"]])


def _why_not(drop: float, ratio: float | None, cfg: QuantizeParams) -> str | None:
    if drop > cfg.auto_max_layer_drop:
        return f"accuracy: -{drop:.2f} validation points (auto_max_layer_drop {cfg.auto_max_layer_drop:g})"
    if ratio is not None and ratio > 1 - SPEED_MARGIN:
        return f"speed: {ratio:.2f}x the float LSTM's p50 here (kept below {1 - SPEED_MARGIN:.2f}x)"
    return None


def _why_kept(ratio: float | None) -> str:
    if ratio is None:
        return "not timed; within auto_max_layer_drop"
    return f"{ratio:.2f}x the float LSTM's p50 here"
