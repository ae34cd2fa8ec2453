"""A teacher known only as a graph: the user's ONNX, TorchScript or torch.export file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from kedro_edge.errors import ConfigError
from kedro_edge.models.footprint import footprint
from kedro_edge.models.sources import SourceKind
from kedro_edge.runtimes import graph_teacher
from kedro_edge.runtimes.onnx_export import INPUT, OUTPUT, to_onnx

SHAPE = (1, 1, 8, 8)


def _users_onnx(module: torch.nn.Module, path: Path) -> Path:
    """As a user exports: their own names, a fixed batch of 1."""
    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.zeros(SHAPE),), buffer, input_names=["images"],
                      output_names=["scores"], opset_version=17, dynamo=False)  # fmt: skip
    path.write_bytes(buffer.getvalue())
    return path


def test_a_users_onnx_is_conformed_and_runs_as_the_module_did(teacher, splits, tmp_path):
    loaded = graph_teacher.load(
        _users_onnx(teacher, tmp_path / "m.onnx"), SourceKind.ONNX, SHAPE, "model.onnx"
    )
    graph = loaded.proto.graph
    assert [i.name for i in graph.input] == [INPUT] and [o.name for o in graph.output] == [OUTPUT]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = torch.from_numpy(splits.x("test"))
    with torch.no_grad():
        assert torch.equal(loaded(x).argmax(1), teacher(x).argmax(1))  # a batch of many, not 1
    copy = io.BytesIO()
    torch.save(loaded, copy)  # teacher.pt: the bytes, no session
    again = torch.load(io.BytesIO(copy.getvalue()), weights_only=False)
    assert torch.allclose(again(x[:5]), loaded(x[:5]))


@pytest.mark.parametrize("kind", [SourceKind.TORCHSCRIPT, SourceKind.EXPORTED_PROGRAM])
def test_torchscript_and_exported_programs_become_onnx_teachers(teacher, splits, tmp_path, kind):
    x = torch.zeros(SHAPE)
    path = tmp_path / "model.bin"
    if kind is SourceKind.TORCHSCRIPT:
        torch.jit.save(torch.jit.trace(teacher, x), path)
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)  # an example of 2: 1 would specialise
        program = torch.export.export(teacher, (torch.zeros(2, *SHAPE[1:]),), dynamic_shapes=({0: batch},))
        torch.export.save(program, path)
    loaded = graph_teacher.load(path, kind, SHAPE, "model.checkpoint")
    test = torch.from_numpy(splits.x("test"))
    with torch.no_grad():
        assert torch.allclose(loaded(test), teacher(test), atol=1e-4)


def test_a_graph_fixed_to_one_sample_is_refused_in_one_line(tmp_path):
    flat = helper.make_node("Reshape", ["x", "shape"], ["flat"])
    fc = helper.make_node("MatMul", ["flat", "w"], ["y"])
    graph = helper.make_graph(
        [flat, fc], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [onnx.numpy_helper.from_array(np.array([1, 64], np.int64), "shape"),
         onnx.numpy_helper.from_array(np.ones((64, 3), np.float32), "w")],
    )  # fmt: skip
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ConfigError) as err:
        graph_teacher.load(path, SourceKind.ONNX, SHAPE, "model.onnx")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"parameter 'model.onnx': {path} takes inputs [1, 1, 8, 8] and cannot run a batch"
    )
    assert "export it with a dynamic batch axis" in message


def test_not_an_onnx_file_and_two_inputs_are_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(ConfigError, match=r"^parameter 'model.onnx': .*bad.onnx is not an ONNX model"):
        graph_teacher.load(bad, SourceKind.ONNX, SHAPE, "model.onnx")
    add = helper.make_node("Add", ["a", "b"], ["c"])
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in "abc"]
    two = tmp_path / "two.onnx"
    onnx.save(helper.make_model(helper.make_graph([add], "two", vi[:2], vi[2:])), two)
    with pytest.raises(ConfigError, match="has 2 inputs and 1 outputs"):
        graph_teacher.load(two, SourceKind.ONNX, SHAPE, "model.onnx")


def test_the_graphs_footprint_is_what_torch_pruning_counts_for_the_module(teacher):
    counted = footprint(teacher, torch.zeros(SHAPE))
    on_graph = graph_teacher.onnx_footprint(to_onnx(teacher, SHAPE), SHAPE)
    assert on_graph.macs == pytest.approx(counted.macs, rel=0.1)  # Conv/Gemm only: no BN, no ReLU
    assert on_graph.params == pytest.approx(counted.params, rel=0.1)  # BatchNorm folded into Conv
