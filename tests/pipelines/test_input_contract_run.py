"""`kedro run` with data.preprocessing: the contract holds through every stage, baked into model.onnx."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml

from kedro_edge.data import Splits
from kedro_edge.data.preprocessing import Preprocessing, to_pixels, to_unit
from kedro_edge.io import ModelInputDataset
from kedro_edge.runtimes.onnx_export import INPUT
from kedro_edge.runtimes.onnxruntime import session
from tests.pipelines.project import TINY, copy_project, kedro

# ImageNet's statistics: a model trained on these inputs is lost on pixels / 255
CONTRACT = {
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "layout": "nhwc",
    "bake": True,
}


@pytest.fixture(scope="module")
def contract_project(tmp_path_factory):
    dest = copy_project(tmp_path_factory.mktemp("contract"))
    catalog = yaml.safe_load((dest / "conf/base/catalog.yml").read_text())
    catalog["raw_images"] = {"type": "kedro_edge.io.DigitsDataset"}  # learnt in a few epochs
    (dest / "conf/base/catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    data = {**TINY["parameters_training.yml"]["data"], "preprocessing": CONTRACT}
    (dest / "conf/local/parameters_training.yml").write_text(yaml.safe_dump({"data": data}))
    # enough fine-tuning that each stage keeps the teacher's accuracy (TINY's recipe does not)
    compression = TINY["parameters_compression.yml"]["compression"]
    compression = {**compression, "prune": {"ratio": 0.3, "steps": 1, "finetune_epochs": 3, "lr": 0.005},
                   "distill": {"epochs": 3, "lr": 0.005}}  # fmt: skip
    (dest / "conf/local/parameters_compression.yml").write_text(yaml.safe_dump({"compression": compression}))
    result = kedro(dest, "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dest


def _accuracy(model_path, x, y) -> float:
    sess = session(onnx.load(model_path))
    return float((sess.run(None, {INPUT: x})[0].argmax(1) == y).mean())


def test_the_contract_holds_through_every_stage_and_the_baked_model_takes_pixels(contract_project):
    splits = Splits(ModelInputDataset(str(contract_project / "data/05_model_input/splits.npz")).load())
    contract = splits.preprocessing
    x, y = np.asarray(splits.x("test")), splits.y("test")  # prepared by the contract as they are read
    assert x.shape[1] == 3  # the gray glyphs became the 3 channels the model expects

    metrics = json.loads((contract_project / "data/08_reporting/compression_metrics.json").read_text())
    stages = metrics["stages"]
    teacher = stages["teacher"]["accuracy"]
    assert teacher > 0.6, stages
    for name, figures in stages.items():  # no stage was fed inputs other than the contract's
        assert figures["accuracy"] > teacher - 0.05, (name, figures["accuracy"], teacher)

    model = onnx.load(contract_project / "data/06_models/model.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in model.metadata_props}
    assert Preprocessing.from_json(meta["kedro-edge.preprocessing"]) == contract
    pixels = to_pixels(x, contract)  # what a device app feeds: uint8, NHWC
    assert pixels.shape[1:] == (*x.shape[2:], 3)
    baked = _accuracy(contract_project / "data/06_models/model.onnx", pixels, y)
    assert abs(baked - stages["int8"]["accuracy"]) <= 0.02  # rounding the inputs to pixels, at most

    # the same teacher fed pixels / 255 (the contract dropped) is lost
    dropped = _accuracy(contract_project / "data/06_models/teacher.onnx", to_unit(x, contract), y)
    assert dropped < teacher - 0.3, (dropped, teacher)


def test_the_release_and_the_device_carry_the_contract(contract_project):
    record = json.loads((contract_project / "data/08_reporting/release.json").read_text())
    assert record["verdict"] == "released"
    assert record["candidate"]["preprocessing"] == {**Preprocessing().model_dump(mode="json"), **CONTRACT}
    device = contract_project / ".edge-device" / "current" / "manifest.json"
    assert json.loads(device.read_text())["model"]["preprocessing"]["layout"] == "nhwc"
    parity = np.load(contract_project / ".edge-device" / "current" / "parity.npy")
    assert parity.dtype == np.uint8  # the device ran the baked model on raw pixels
