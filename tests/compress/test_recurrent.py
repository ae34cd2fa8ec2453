"""Recurrent layers in model.onnx: a dynamically quantized LSTM where it pays, GRU/RNN left float.

Real models on the digits, read as a sequence of 8 rows of 8 pixels, through the real export and
ONNX Runtime. Latency decides whether an LSTM is kept: it is measured, never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kedro_edge import nodes
from kedro_edge.compress.mixed_precision import SPEED_MARGIN, Timing
from kedro_edge.compress.ptq import quantize_int8
from kedro_edge.compress.recurrent import NO_KERNEL, quantize_recurrent
from kedro_edge.config import QuantizeParams
from kedro_edge.data import calibration_samples
from kedro_edge.models.training import fit
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session

QUICK = Timing(blocks=2, min_runs=20, warmup=2)
COMPRESSION = {"quantize": {"calibration_samples": 64}}


class RowClassifier(nn.Module):
    """A recurrent classifier over the rows of a 1-channel image (two stacked layers)."""

    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(8, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x[:, 0])
        return self.head(out[:, -1])


def _trained(cell: type[nn.RNNBase], splits) -> nn.Module:
    torch.manual_seed(0)
    model = RowClassifier(cell)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: a second thread only contends on a shared machine
    try:
        fit(model, splits, epochs=6, batch_size=64, lr=0.01)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def lstm(splits):
    return _trained(nn.LSTM, splits)


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_the_export_reports_each_lstm_with_a_measured_decision(lstm, splits):
    model, report = nodes.export_model(lstm, splits.arrays, COMPRESSION)
    rows = report["recurrent"]
    assert [r["op"] for r in rows] == ["LSTM", "LSTM"]
    for row in rows:
        assert row["dynamic_int8"] in ("kept", "not kept") and row["reason"]
        assert row["p50_ms_float"] > 0 and row["p50_ms_dynamic"] > 0 and "val_drop_points" in row
    names = {n.name: n.op_type for n in model.graph.node}
    for row in rows:  # the graph is what the report says
        kept = row["dynamic_int8"] == "kept"
        assert (names.get(row["node"]), names.get(f"{row['node']}_quant")) == (
            (None, "DynamicQuantizeLSTM") if kept else ("LSTM", None)
        )
    assert "QuantizeLinear" in _ops(model)  # the rest stays static INT8


def test_a_kept_dynamic_lstm_predicts_as_the_float_model_and_ships_fewer_bytes(lstm, splits):
    fp32 = to_onnx(lstm, splits.input_shape)
    cfg = QuantizeParams(calibration_samples=64)
    int8 = quantize_int8(fp32, calibration_samples(splits, 64), cfg)
    model, rows = quantize_recurrent(fp32, int8, splits, cfg, timing=None)  # accuracy alone decides
    assert [r["dynamic_int8"] for r in rows] == ["kept", "kept"], rows
    assert _ops(model).count("DynamicQuantizeLSTM") == 2 and "LSTM" not in _ops(model)
    assert len(model.SerializeToString()) < 0.7 * len(int8.SerializeToString())  # int8 LSTM weights
    x = splits.x("test")
    agree = ort_predict(session(model), x).argmax(1) == ort_predict(session(fp32), x).argmax(1)
    assert agree.mean() >= 0.95
    right = ort_predict(session(model), x).argmax(1) == splits.y("test")
    assert right.mean() > 0.5  # it learned (chance: 0.1)


def test_an_lstm_listed_in_quantize_exclude_stays_float(lstm, splits):
    fp32 = to_onnx(lstm, splits.input_shape)
    first = next(n.name for n in fp32.graph.node if n.op_type == "LSTM")
    compression = {"quantize": {**COMPRESSION["quantize"], "exclude": [first]}}
    model, report = nodes.export_model(lstm, splits.arrays, compression)
    row = next(r for r in report["recurrent"] if r["node"] == first)
    assert row["dynamic_int8"] == "not kept" and "compression.quantize.exclude" in row["reason"]
    assert first in {n.name for n in model.graph.node if n.op_type == "LSTM"}


@pytest.mark.parametrize("cell", [nn.GRU, nn.RNN])
def test_a_gru_or_rnn_stays_float_and_the_report_says_why(cell, splits):
    torch.manual_seed(0)
    model, report = nodes.export_model(RowClassifier(cell).eval(), splits.arrays, COMPRESSION)
    op = cell.__name__
    assert [(r["op"], r["dynamic_int8"]) for r in report["recurrent"]] == [(op, NO_KERNEL)] * 2
    assert _ops(model).count(op) == 2 and "DynamicQuantizeLSTM" not in _ops(model)


def test_a_model_without_recurrent_layers_has_no_recurrent_report(teacher, splits):
    _, report = nodes.export_model(teacher, splits.arrays, COMPRESSION)
    assert "recurrent" not in report


def test_quick_timing_of_the_dynamic_lstm_fills_both_medians(lstm, splits):
    fp32 = to_onnx(lstm, splits.input_shape)
    cfg = QuantizeParams(calibration_samples=64, auto_max_layer_drop=100)
    int8 = quantize_int8(fp32, calibration_samples(splits, 64), cfg)
    _, rows = quantize_recurrent(fp32, int8, splits, cfg, timing=QUICK)
    for row in rows:
        faster = row["p50_ms_dynamic"] / row["p50_ms_float"] <= 1 - SPEED_MARGIN
        assert row["dynamic_int8"] == ("kept" if faster else "not kept"), row
        assert np.isfinite(row["val_drop_points"])
