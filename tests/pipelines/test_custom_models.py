"""The example of a user's own architecture goes through the factory, pruning and ptq."""

from __future__ import annotations

from kedro_edge.compress.prune import prune
from kedro_edge.config import ModelSpec, PruneParams, TrainParams
from kedro_edge.models import build_model
from kedro_edge.runtimes import onnx_export
from pipelines.custom_models import SmallCNN
from tests.conftest import conv_out_channels


def test_the_example_is_built_by_import_path_pruned_and_exported(splits, example):
    spec = ModelSpec(class_path="pipelines.custom_models.SmallCNN", kwargs={"width": 8})
    model = build_model(spec, tuple(example.shape), splits.num_classes)
    assert isinstance(model, SmallCNN)
    assert conv_out_channels(model) == [8, 16, 32]
    assert model(example).shape == (1, 10)

    student, _ = prune(
        model, splits, PruneParams(ratio=0.5, steps=1, finetune_epochs=0), TrainParams(epochs=1)
    )
    assert conv_out_channels(student) == [4, 8, 16]  # channels physically removed
    onnx_model = onnx_export.to_onnx(student.eval(), tuple(example.shape))
    assert {n.op_type for n in onnx_model.graph.node} >= {"Conv", "Gemm"}
