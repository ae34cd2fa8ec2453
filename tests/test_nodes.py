"""The Kedro nodes' switches: each stage can be turned off or redirected from parameters."""

import onnx

from kedro_edge import nodes
from kedro_edge.compress.quantize import is_quantization_aware, to_float
from kedro_edge.models import ResidualCNN
from tests.conftest import conv_out_channels

TRAIN = {"batch_size": 64}


def test_ptq_only_path_when_distillation_is_off(teacher, splits):
    comp = {"distill": {"enabled": False}, "quantize": {"calibration_samples": 32}}
    qat = nodes.quantize_student(teacher, splits.arrays, comp)
    student = nodes.distill_student(qat, teacher, splits.arrays, comp, TRAIN)
    assert student is qat  # untouched: no training under quantization
    model = nodes.export_model(student, splits.arrays, comp)
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}


def test_quantization_off_ships_fp32(teacher, splits):
    comp = {"quantize": {"enabled": False}, "distill": {"enabled": False}}
    student = nodes.quantize_student(teacher, splits.arrays, comp)
    assert not is_quantization_aware(student)
    model = nodes.export_model(student, splits.arrays, comp)
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" not in ops
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)


def test_a_smaller_student_architecture_is_distilled_from_the_teacher(teacher, splits):
    spec = {"class_path": "kedro_edge.models.ResidualCNN", "kwargs": {"widths": [4]}}
    comp = {"distill": {"epochs": 1, "student": spec}, "quantize": {"calibration_samples": 32}}
    student = nodes.distill_student(teacher, teacher, splits.arrays, comp, TRAIN)
    assert is_quantization_aware(student)

    plain = to_float(student)
    assert isinstance(plain, ResidualCNN) and conv_out_channels(plain) == [4, 4, 4]
