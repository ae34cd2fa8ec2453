"""The Kedro nodes' switches: each stage can be turned off or redirected from parameters."""

import onnx

from kedro_edge import nodes
from kedro_edge.compress.quantize import is_quantization_aware, to_float
from kedro_edge.models import ResidualCNN
from tests.conftest import conv_out_channels

TRAIN = {"batch_size": 64}


def test_ptq_only_path_when_distillation_is_off(teacher, splits):
    comp = {"distill": {"enabled": False}, "quantize": {"calibration_samples": 32}}
    qat = nodes.apply_technique("quantize", teacher, teacher, splits.arrays, comp, TRAIN)[0]
    student = nodes.apply_technique("distill", qat, teacher, splits.arrays, comp, TRAIN)[0]
    assert student is qat  # untouched: no training under quantization
    model, report = nodes.export_model(student, splits.arrays, comp)
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}
    assert report["quantized"] and report["exclude"] == []


def test_auto_mixed_precision_keeps_the_layers_it_reports_in_float(teacher, splits):
    comp = {"quantize": {"calibration_samples": 32, "exclude": "auto"}}
    model, report = nodes.export_model(teacher, splits.arrays, comp)
    assert report["mode"] == "auto" and report["exclude"] == [e["layer"] for e in report["excluded"]]
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weighted = {n.name: n for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    for name in report["exclude"]:  # float weights straight into the layer, no DequantizeLinear
        assert weighted[name].input[1] not in dequantized
    int8 = [n for name, n in weighted.items() if name not in report["exclude"]]
    if report["int8_pays"]:
        assert int8 and all(n.input[1] in dequantized for n in int8)
    else:  # this tiny net's best INT8 mixture timed slower than FP32 here: it ships float, every layer
        assert not int8 and not dequantized and report["int8_layers"] == 0


def test_quantization_off_ships_fp32(teacher, splits):
    comp = {"quantize": {"enabled": False}, "distill": {"enabled": False}}
    student = nodes.apply_technique("quantize", teacher, teacher, splits.arrays, comp, TRAIN)[0]
    assert not is_quantization_aware(student)
    model, report = nodes.export_model(student, splits.arrays, comp)
    assert report == {"quantized": False}
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" not in ops
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)


def test_a_smaller_student_architecture_is_distilled_from_the_teacher(teacher, splits):
    spec = {"class_path": "kedro_edge.models.ResidualCNN", "kwargs": {"widths": [4]}}
    comp = {"distill": {"epochs": 1, "student": spec}, "quantize": {"calibration_samples": 32}}
    student = nodes.apply_technique("distill", teacher, teacher, splits.arrays, comp, TRAIN)[0]
    assert is_quantization_aware(student)

    plain = to_float(student)
    assert isinstance(plain, ResidualCNN) and conv_out_channels(plain) == [4, 4, 4]


def test_the_sample_size_check_warns_before_training_when_n_is_too_small(splits, caplog):
    # the digits' test split (~360 images) cannot show a 0.5-point drop at 3% discordance
    n = len(splits.y("test"))
    with caplog.at_level("WARNING"):
        report = nodes.check_sample_size(splits.arrays, {"gates": {"max_accuracy_drop": 0.5}})
    assert report["test_n"] == n and report["half_width_points"] > 1.5
    assert report["warnings"] and f"n = {n:,} test images give ±" in caplog.text
    assert (
        nodes.check_sample_size(
            splits.arrays, {"gates": {"max_accuracy_drop": 3.0, "max_robust_accuracy_drop": 4.0}}
        )["warnings"]
        == []
    )
