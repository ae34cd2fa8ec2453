"""Post-training quantization: an FP32 ONNX graph to INT8 with ONNX Runtime's static quantizer.

INT8 is QDQ with int8 per-channel weights and (by default) uint8 activations, statically
calibrated on training images. U8S8 because it is what ORT fuses fully on x86-64 (every
Conv becomes a QLinearConv; with S8S8 the Conv+ReLU nodes stayed float here), and QDQ
because QOperator S8S8 is slow on x86-64; dynamic quantization of Conv is slow too
(onnxruntime#12854). MinMax calibration is the default: it
has had none of the QDQ bugs of entropy/percentile (onnxruntime#11928).
"""

from __future__ import annotations

import difflib
import inspect
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from kedro_edge.compress.quantize import QuantizeParams
from kedro_edge.errors import ConfigError
from kedro_edge.runtimes.onnx_export import INPUT, check

ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class _Batches(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self._items = iter([{INPUT: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


# Weighted layers: what ``compression.quantize.exclude`` names and ``compress.mixed_precision`` ranks.
LAYER_OPS = ("Conv", "Gemm", "MatMul")

# quantize_static can reuse the tensor ranges of a cache file (its ``calibration_cache_path``, in the
# ORT installed here): calibrate once, quantize many times; an ORT without it calibrates on every
# call (the same result, only slower)
_CAN_CACHE = "calibration_cache_path" in inspect.signature(quantize_static).parameters


def check_exclusions(
    fp32: onnx.ModelProto, names: list[str], key: str = "compression.quantize.exclude"
) -> list[str]:
    """``names`` if every one is a node of ``fp32``, else a one-line ``ConfigError`` naming ``key``."""
    known = [n.name for n in fp32.graph.node]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"parameter '{key}': no ONNX node named {name!r} in the exported model{hint}")
    return list(names)


def float_closure(graph: onnx.GraphProto, exclude: Sequence[str]) -> list[str]:
    """``exclude`` plus every non-layer node (Clip, Relu, Add, pooling) all of whose inputs are float.

    An activation or a residual Add between float layers would otherwise get its own Q/DQ pair:
    a float island then pays for quantizing twice, and ORT cannot fuse the Add into the float Conv.
    """
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    excluded, floats = set(exclude), set(exclude)
    float_tensors: set[str] = set()
    for node in graph.node:  # topologically sorted, as ONNX requires
        activations = [i for i in node.input if i and i not in constants]
        derived = node.op_type not in LAYER_OPS and bool(activations) and set(activations) <= float_tensors
        if node.name in excluded or derived:
            floats.add(node.name)
            float_tensors.update(node.output)
    return sorted(floats)


# ORT's symbolic shape inference writes this file into the working directory when it cannot finish
_SYMBOLIC_LEFTOVERS = ("sym_shape_infer_temp.onnx", "sym_shape_infer_temp.onnx.data")


def _pre_process(source: Path, dest: Path) -> None:
    """ORT's pre-processing (shape inference, folding); without its symbolic shape inference for a
    graph with a Resize (an encoder-decoder's output size follows the batch's: that inference cannot
    finish), or when it fails on another graph. ORT leaves its partial result in the working
    directory on such a failure: removed here unless it was there before."""
    model = onnx.load(str(source), load_external_data=False)
    if any(node.op_type == "Resize" for node in model.graph.node):
        quant_pre_process(str(source), str(dest), skip_symbolic_shape=True)
        return
    present = {name for name in _SYMBOLIC_LEFTOVERS if os.path.exists(name)}
    try:
        quant_pre_process(str(source), str(dest))
    except Exception:  # ORT raises a bare Exception("Incomplete symbolic shape inference")
        for name in set(_SYMBOLIC_LEFTOVERS) - present:
            Path(name).unlink(missing_ok=True)
        quant_pre_process(str(source), str(dest), skip_symbolic_shape=True)


class Int8Quantizer:
    """Static INT8 QDQ versions of one FP32 model: pre-processed and calibrated once, quantized per call.

    ``compress.mixed_precision`` builds dozens of variants (one layer quantized, a float prefix);
    ORT's pre-processing and calibration are most of the cost of each, so they are done once here.
    Use as a context manager (a temporary folder holds the intermediate files).
    """

    def __init__(self, fp32: onnx.ModelProto, calibration: np.ndarray, cfg: QuantizeParams) -> None:
        self._calibration, self._cfg = calibration, cfg
        self._tmp = tempfile.TemporaryDirectory(prefix="kedro-edge-quant-")
        folder = Path(self._tmp.name)
        self._pre, self._out, self._cache = folder / "pre.onnx", folder / "int8.onnx", folder / "ranges.json"
        onnx.save(fp32, folder / "fp32.onnx")
        _pre_process(folder / "fp32.onnx", self._pre)
        self.graph = onnx.load(self._pre).graph  # what the quantizer sees (Constants folded)

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def quantize(self, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> onnx.ModelProto:
        """The INT8 model, ``exclude`` in float (with ``float_closure``); ``only``: quantize just these."""
        cached = _CAN_CACHE and self._cache.exists()
        quantize_static(
            str(self._pre),
            str(self._out),
            None if cached else _Batches(self._calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=self._cfg.per_channel,
            activation_type=ACTIVATION_TYPES[self._cfg.activation_type],
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[self._cfg.calibrate_method],
            nodes_to_exclude=float_closure(self.graph, list(exclude)) if exclude else [],
            nodes_to_quantize=list(only),
            **({"calibration_cache_path": str(self._cache)} if _CAN_CACHE else {}),
        )
        return onnx.load(self._out)


def quantize_int8(fp32: onnx.ModelProto, calibration: np.ndarray, cfg: QuantizeParams) -> onnx.ModelProto:
    """Static INT8 QDQ model of ``fp32``, activation ranges calibrated on ``calibration`` images.

    The nodes named in ``cfg.exclude`` stay float (mixed precision), and so do the activations
    and residual Adds fed only by them (``float_closure``). ``"auto"`` has to be resolved into
    names first, on the validation split: ``compress.mixed_precision.resolve``.
    """
    if cfg.exclude == "auto":
        raise ConfigError(
            "parameter 'compression.quantize.exclude': 'auto' must be resolved into node names "
            "(kedro_edge.compress.mixed_precision.resolve) before quantize_int8"
        )
    exclude = check_exclusions(fp32, cfg.exclude)
    with Int8Quantizer(fp32, calibration, cfg) as quantizer:
        return check(quantizer.quantize(exclude))
