"""The input contract in an ONNX model: written into its metadata, optionally baked into its graph.

``stamp`` records ``data.preprocessing`` in ``metadata_props`` (``METADATA_KEY``), so whoever
holds the file knows what to feed it. ``bake`` goes further: the model's input becomes raw
``uint8`` pixels (in the contract's layout) and the graph's first nodes do the scaling and
normalisation, so a device app needs no preprocessing code. ``feed`` turns prepared float
inputs into what a model takes, read from the model itself: the host's sessions and the parity
batch sent to devices go through it, so a baked model is always fed pixels.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kedro_edge.data.preprocessing import METADATA_KEY, Preprocessing, to_pixels
from kedro_edge.runtimes.onnx_export import INPUT, check

PREPARED = f"{INPUT}_prepared"  # the baked nodes' output: what the original graph reads


def stamp(model: onnx.ModelProto, contract: Preprocessing | None) -> onnx.ModelProto:
    """``model`` with the contract in its metadata (unchanged without one)."""
    if contract is None:
        return model
    entries = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)
    model.metadata_props.add(key=METADATA_KEY, value=contract.to_json())
    return model


def contract_of(model: onnx.ModelProto | ort.InferenceSession) -> Preprocessing | None:
    """The contract a model carries in its metadata, if any."""
    if isinstance(model, ort.InferenceSession):
        text = model.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    else:
        text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    return None if text is None else Preprocessing.from_json(text)


def bake(model: onnx.ModelProto, contract: Preprocessing) -> onnx.ModelProto:
    """``model`` taking ``uint8`` pixels: Cast, [Transpose from NHWC], Mul, Add, then the graph.

    ``(pixel * scale - mean) / std`` is one multiply and one add per channel, in float, ahead
    of the first QuantizeLinear. Returns a new, checked model; the input keeps its name.
    """
    graph = model.graph
    original = next(i for i in graph.input if i.name == INPUT)
    dims = original.type.tensor_type.shape.dim
    channels = dims[1].dim_value
    std = np.broadcast_to(np.asarray(contract.std, np.float32), (channels,))
    mean = np.broadcast_to(np.asarray(contract.mean, np.float32), (channels,))
    mul = (np.float32(contract.scale) / std).reshape(1, channels, 1, 1).astype(np.float32)
    add = (-mean / std).reshape(1, channels, 1, 1).astype(np.float32)

    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    g = baked.graph
    for node in g.node:  # the graph now reads the prepared tensor
        node.input[:] = [PREPARED if name == INPUT else name for name in node.input]
    nchw = [d.dim_param or d.dim_value for d in dims]
    shape = nchw if contract.layout == "nchw" else [nchw[0], nchw[2], nchw[3], nchw[1]]
    pixels = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, shape)
    steps = [helper.make_node("Cast", [INPUT], ["pixels_float"], to=TensorProto.FLOAT, name="contract_cast")]
    if contract.layout == "nhwc":
        steps.append(helper.make_node("Transpose", ["pixels_float"], ["pixels_nchw"], perm=[0, 3, 1, 2],
                                      name="contract_to_nchw"))  # fmt: skip
    source = steps[-1].output[0]
    steps += [
        helper.make_node("Mul", [source, "contract_mul"], ["pixels_scaled"], name="contract_scale"),
        helper.make_node("Add", ["pixels_scaled", "contract_add"], [PREPARED], name="contract_normalise"),
    ]
    g.initializer.extend(
        [numpy_helper.from_array(mul, "contract_mul"), numpy_helper.from_array(add, "contract_add")]
    )
    nodes = list(g.node)
    del g.node[:]
    g.node.extend([*steps, *nodes])
    kept = [i for i in g.input if i.name != INPUT]
    del g.input[:]
    g.input.extend([pixels, *kept])
    return check(baked)


def feed(model: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """``x`` (prepared float inputs) as ``model`` takes them: raw pixels for a baked model."""
    if x.dtype == np.uint8 or model.get_inputs()[0].type != "tensor(uint8)":
        return x
    contract = contract_of(model)
    if contract is None:
        raise ValueError("a model taking uint8 inputs carries no input contract in its metadata")
    return to_pixels(x, contract)
