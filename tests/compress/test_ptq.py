import numpy as np
import onnx
import pytest
from onnx import TensorProto

from kedro_edge.compress.ptq import quantize_int8
from kedro_edge.compress.quantize import float_module, prepare_qat
from kedro_edge.config import QuantizeParams
from kedro_edge.data import calibration_samples
from kedro_edge.models.training import predict
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session


@pytest.fixture
def fp32(teacher, splits):
    return to_onnx(teacher, splits.input_shape)


def test_fp32_export_is_checked_agrees_with_torch_and_has_a_dynamic_batch(teacher, splits, fp32):
    onnx.checker.check_model(fp32, full_check=True)
    batch_dim = fp32.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    sess = session(fp32)
    x = splits.x("test")
    for n in (1, 7):
        assert sess.run(None, {"input": x[:n]})[0].shape == (n, 10)
    np.testing.assert_allclose(ort_predict(sess, x), predict(teacher, x), atol=1e-4)


def test_quantization_aware_modules_export_their_float_weights(teacher, splits):
    qat = prepare_qat(teacher, calibration_samples(splits, 32))
    exported = to_onnx(float_module(qat), splits.input_shape)
    ops = {n.op_type for n in exported.graph.node}
    assert "Conv" in ops and not ops & {"QuantizeLinear", "FakeQuantize"}


def test_int8_model_is_a_qdq_graph_with_int8_weights(fp32, splits):
    int8 = quantize_int8(fp32, calibration_samples(splits, 64), QuantizeParams())
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    weights = [t for t in int8.graph.initializer if t.name.endswith("_quantized") and len(t.dims) == 4]
    assert weights and all(t.data_type == TensorProto.INT8 for t in weights)
    # per-channel: one scale per output channel of each conv weight
    scales = {t.name: t for t in int8.graph.initializer}
    w = weights[0]
    assert scales[w.name.replace("_quantized", "_scale")].dims[0] == w.dims[0]
    # smaller, and still right
    assert len(int8.SerializeToString()) < 0.8 * len(fp32.SerializeToString())  # tiny: names dominate
    x, y = splits.x("test"), splits.y("test")
    acc32 = (ort_predict(session(fp32), x).argmax(1) == y).mean()
    acc8 = (ort_predict(session(int8), x).argmax(1) == y).mean()
    assert acc8 >= acc32 - 0.03
    assert int8.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_int8_activation_type_is_a_parameter(fp32, splits):
    calib = calibration_samples(splits, 32)
    for name, dtype in (("uint8", TensorProto.UINT8), ("int8", TensorProto.INT8)):
        model = quantize_int8(fp32, calib, QuantizeParams(activation_type=name))
        zero = next(t for t in model.graph.initializer if t.name == "input_zero_point")
        assert zero.data_type == dtype
