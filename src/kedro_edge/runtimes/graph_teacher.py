"""A teacher known only as a graph: an ONNX file, or a TorchScript / ``torch.export`` file made one.

Such a teacher has no Python module to prune, factorise, fine-tune or distil: it gets the steps
that work on the graph (static INT8 with mixed precision, validation, the gates, deployment)
and the compression plan switches the rest off, one line each (``kedro_edge.nodes.search``).

``OnnxTeacher`` lets it travel where the pipeline passes a module (``teacher.pt``): its forward
runs the graph in ONNX Runtime, so evaluation treats it like any teacher. ``conform`` gives a
user's ONNX file the shape of the graphs this package exports: one input named ``INPUT``, one
output named ``OUTPUT``, a dynamic batch axis.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from kedro_edge.errors import ConfigError, first_line
from kedro_edge.models.footprint import Footprint
from kedro_edge.models.sources import SourceKind
from kedro_edge.runtimes.onnx_export import INPUT, OUTPUT, check

MIN_OPSET = 13  # per-channel QDQ (onnxruntime.quantization)


class OnnxTeacher(nn.Module):
    """A graph-only teacher: ``forward`` runs its ONNX model in ONNX Runtime on the CPU."""

    graph_only = True  # what techniques that rewrite a torch module check before they run

    def __init__(self, model: bytes) -> None:
        super().__init__()
        self.model_bytes = model
        self._session: ort.InferenceSession | None = None

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.load_from_string(self.model_bytes)

    def footprint(self, example: torch.Tensor) -> Footprint:
        """MACs (Conv, Gemm, MatMul) and parameters (float initializers) of the graph for ``example``."""
        return onnx_footprint(self.proto, tuple(example.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            self._session = ort.InferenceSession(self.model_bytes, providers=["CPUExecutionProvider"])
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)  # channels-last batches too
        out = self._session.run(None, {INPUT: feed})[0]
        return torch.from_numpy(out)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None  # sessions do not pickle; teacher.pt holds the bytes
        return state


def onnx_footprint(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> Footprint:
    """What ``kedro_edge.models.footprint`` counts for a module, counted on an ONNX graph: the
    multiply-accumulates of its Conv, Gemm and MatMul nodes at ``input_shape``, and the elements
    of its float initializers."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = next(i for i in fixed.graph.input if i.name == INPUT).type.tensor_type.shape.dim
    for dim, size in zip(dims, input_shape, strict=False):
        dim.ClearField("dim_param")
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(fixed)
    values = (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    weights = {i.name: list(i.dims) for i in inferred.graph.initializer}
    shapes.update(weights)
    macs = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if not out or not all(out):
            continue
        if node.op_type == "Conv" and node.input[1] in weights:
            macs += int(np.prod(out)) * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or []
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = (a[-2] if trans_a else a[-1]) if a else 0
            macs += int(np.prod(out)) * int(k)
    params = sum(
        int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT
    )
    return Footprint(macs=macs, params=params)


def is_graph_only(module: Any) -> bool:
    return bool(getattr(module, "graph_only", False))


def load(path: Path, kind: SourceKind, input_shape: tuple[int, ...], key: str) -> OnnxTeacher:
    """The graph in ``path`` as an ``OnnxTeacher`` fitting inputs of ``input_shape``."""
    if kind is SourceKind.ONNX:
        try:
            model = onnx.load(path)
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise ConfigError(
                f"parameter '{key}': {path} is not an ONNX model ({first_line(exc, 300)})"
            ) from None
    elif kind is SourceKind.TORCHSCRIPT:
        model = _from_torchscript(path, input_shape, key)
    elif kind is SourceKind.EXPORTED_PROGRAM:
        model = _from_exported_program(path, key)
    else:
        raise ValueError(f"{kind} is not a graph")
    return OnnxTeacher(conform(model, input_shape, path, key).SerializeToString())


def _from_torchscript(path: Path, input_shape: tuple[int, ...], key: str) -> onnx.ModelProto:
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    buffer = io.BytesIO()
    try:
        torch.onnx.export(scripted, (torch.zeros(input_shape),), buffer, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=17, dynamo=False)  # fmt: skip
    except Exception as exc:  # the TorchScript exporter's own messages
        raise ConfigError(
            f"parameter '{key}': {path}: TorchScript to ONNX failed ({first_line(exc, 300)})"
        ) from None
    return onnx.load_from_string(buffer.getvalue())


def _from_exported_program(path: Path, key: str) -> onnx.ModelProto:
    if importlib.util.find_spec("onnxscript") is None:  # torch's exporter for exported programs needs it
        raise ConfigError(
            f"parameter '{key}': {path} is a torch.export program; turning it into ONNX needs "
            "onnxscript (pip install 'kedro-edge[export]')"
        )
    program = torch.export.load(str(path))
    try:
        return torch.onnx.export(program, dynamo=True, opset_version=18, verbose=False).model_proto
    except Exception as exc:
        raise ConfigError(
            f"parameter '{key}': {path}: torch.export to ONNX failed ({first_line(exc, 300)})"
        ) from None


def conform(model: onnx.ModelProto, input_shape: tuple[int, ...], path: Path, key: str) -> onnx.ModelProto:
    """One input ``INPUT``, one output ``OUTPUT``, a dynamic batch axis, a supported opset; and it
    runs on two samples of the data's shape. Anything else is one line naming ``key`` and the file."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ConfigError(
            f"parameter '{key}': {path} has {len(inputs)} inputs and {len(graph.output)} outputs; "
            "a classifier with one input and one output (logits) is needed"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ConfigError(
                f"parameter '{key}': {path} uses opset {opset}; {MIN_OPSET}+ is needed ({first_line(exc)})"
            ) from None
        graph = model.graph
    expected = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    _rename(graph, inputs[0].name, INPUT)
    _rename(graph, graph.output[0].name, OUTPUT)
    for value in (next(i for i in graph.input if i.name == INPUT), graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    try:
        quiet = ort.SessionOptions()
        quiet.log_severity_level = 4  # the reason goes into the one line, not onto stderr
        session = ort.InferenceSession(model.SerializeToString(), quiet, providers=["CPUExecutionProvider"])
        out = session.run(None, {INPUT: np.zeros((2, *input_shape[1:]), np.float32)})[0]
    except Exception as exc:  # ORT's errors: a shape the graph cannot take, a fixed batch size
        raise ConfigError(
            f"parameter '{key}': {path} takes inputs {expected} and cannot run a batch of the data's "
            f"{list(input_shape[1:])} samples ({first_line(exc, 300)}); export it with a dynamic batch axis "
            "and set data.image_size / data.preprocessing to the size it takes"
        ) from None
    if out.ndim != 2 or out.shape[0] != 2:
        raise ConfigError(
            f"parameter '{key}': {path} outputs {list(out.shape)} for 2 samples, not (2, classes)"
        )
    return check(model)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
