"""One technique, registered once, reaches everything that walks the recipe.

A throw-away technique defined here (and nowhere else) shows up as a node of the compression
pipeline, as a parameter section, as a row of ``compression_metrics`` and in the search's recipe.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from torch import nn

from kedro_edge import config, nodes
from kedro_edge.compress import registry
from kedro_edge.errors import ConfigError, RequiredStageError
from kedro_edge.pipelines import create_compression_pipeline, create_validation_pipeline
from kedro_edge.schema import Strict
from kedro_edge.search import record
from kedro_edge.search.space import Settings, stages, to_recipe


class RescaleParams(registry.TechniqueParams):
    factor: float = 2.0


def rescale(module: nn.Module, params: RescaleParams, ctx: registry.Context) -> tuple[nn.Module, dict]:
    """Scales the classifier's logits: the predicted class never changes, the weights do."""
    model = copy.deepcopy(module)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(params.factor)
        last.bias.mul_(params.factor)
    return model, {"factor": params.factor}


@pytest.fixture
def rescale_registered():
    technique = registry.Technique(
        "rescale", RescaleParams, rescale, output="rescaled_module", report="rescale_report", stage="rescaled"
    )
    registry.register(technique, position=45)  # after distillation, before clustering
    yield technique
    registry.unregister("rescale")


def test_the_recipe_order_is_the_registry_order():
    assert [t.name for t in registry.techniques()] == ["lowrank", "prune", "quantize", "distill", "cluster"]
    assert list(config.CompressionParams.model_fields) == [
        "search",
        "lowrank",
        "prune",
        "quantize",
        "distill",
        "cluster",
        "export",
    ]


def test_a_registered_technique_is_a_node_a_parameter_section_and_a_recipe_entry(rescale_registered):
    pipe = create_compression_pipeline()
    by_name = {n.name: n for n in pipe.nodes}
    assert by_name["rescale"].inputs[0] == "student_module"  # distillation's output
    assert by_name["rescale"].outputs == ["rescaled_module", "rescale_report"]
    assert by_name["cluster"].inputs[0] == "rescaled_module"
    assert "rescaled_module" in create_validation_pipeline().inputs()

    cfg = config.parse(config.CompressionParams, {"rescale": {"factor": 3.0}}, "compression")
    assert cfg.rescale.factor == 3.0
    with pytest.raises(ConfigError, match=r"compression\.rescale\.factr"):
        config.parse(config.CompressionParams, {"rescale": {"factr": 3.0}}, "compression")

    plan = nodes.plan_compression(record.disabled(), {"rescale": {"factor": 3.0}})
    assert plan["rescale"] == {"enabled": True, "required": False, "factor": 3.0}


def test_the_search_recipe_carries_a_registered_technique(rescale_registered, teacher, example):
    cfg = config.parse(config.CompressionParams, {"rescale": {"factor": 5.0}}, "compression")
    recipe = to_recipe(Settings(keep={}), cfg, stages(teacher, example), exclude=[])
    assert recipe.rescale.factor == 5.0


def test_a_registered_technique_gets_its_row_in_compression_metrics(rescale_registered, teacher, splits):
    compression = {
        "prune": {"ratio": 0.5, "steps": 1, "finetune_epochs": 0},
        "quantize": {"calibration_samples": 32},
        "distill": {"epochs": 1},
        "cluster": {"enabled": False},
        "rescale": {"factor": 4.0},
    }
    validation = {
        "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0},
        "robustness": {"enabled": False},
        "bootstrap_resamples": 1000,
    }
    pipe = (create_compression_pipeline() + create_validation_pipeline()).to_outputs("compression_metrics")
    inputs = {
        "teacher_module": teacher,
        "teacher_source": {"kind": "trained"},
        "model_input": splits.arrays,
        "fleet": None,
        "params:compression": compression,
        "params:training": {"epochs": 1, "batch_size": 64},
        "params:validation": validation,
    }
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in inputs.items()})
    catalog["compression_metrics"] = MemoryDataset()
    catalog["rescale_report"] = MemoryDataset()
    SequentialRunner().run(pipe, catalog)

    metrics = json.loads(json.dumps(catalog.load("compression_metrics")))  # what the JSON dataset writes
    assert list(metrics["stages"]) == ["teacher", "pruned", "distilled", "rescaled", "int8"]
    rescaled, distilled = metrics["stages"]["rescaled"], metrics["stages"]["distilled"]
    assert rescaled["vs_previous"]["stage"] == "distilled"
    assert rescaled["accuracy"] == distilled["accuracy"]  # scaled logits, same classes
    assert catalog.load("rescale_report") == {"factor": 4.0}


def test_a_technique_that_cannot_take_the_architecture_passes_it_on_in_one_line(teacher, splits, caplog):
    def fails(module, params, ctx):
        raise RuntimeError("shape '[1, 768, 4]' is invalid for input of size 1536\nmore lines")

    registry.register(registry.Technique("fragile", RescaleParams, fails, output="f", report="f_report"), 45)
    try:
        with caplog.at_level("WARNING"):
            out, report = nodes.apply_technique("fragile", teacher, teacher, splits.arrays, {}, {})
    finally:
        registry.unregister("fragile")
    assert report == {"skipped": "RuntimeError: shape '[1, 768, 4]' is invalid for input of size 1536"}
    pairs = zip(out.state_dict().values(), teacher.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "compression.fragile: skipped: RuntimeError: shape '[1, 768, 4]' is invalid for input of size 1536; "
        "set compression.fragile.enabled: false"
    ) in messages


def test_a_required_technique_that_cannot_take_the_architecture_stops_the_run_in_one_line(teacher, splits):
    def fails(module, params, ctx):
        raise RuntimeError("shape '[1, 768, 4]' is invalid for input of size 1536\nmore lines")

    registry.register(registry.Technique("fragile", RescaleParams, fails, output="f", report="f_report"), 45)
    try:
        with pytest.raises(RequiredStageError) as raised:
            required = {"fragile": {"required": True}}
            nodes.apply_technique("fragile", teacher, teacher, splits.arrays, required, {})
    finally:
        registry.unregister("fragile")
    assert str(raised.value) == (
        "compression.fragile.required: true but fragile cannot take this architecture: RuntimeError: "
        "shape '[1, 768, 4]' is invalid for input of size 1536 "
        "(set compression.fragile.required: false to pass it on)"
    )


def test_a_graph_teacher_stops_the_plan_when_a_torch_only_technique_is_required():
    source = {"kind": "onnx", "path": "data/01_raw/mine.onnx", "sha256": "0" * 64}
    plan = nodes.plan_compression(record.disabled(), {}, source)
    assert plan["prune"]["enabled"] is False and plan["quantize"]["enabled"] is True
    with pytest.raises(RequiredStageError) as raised:
        nodes.plan_compression(record.disabled(), {"prune": {"required": True}}, source)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("compression.prune.required: true but prune cannot take this architecture: ")
    assert "the teacher is a graph (onnx data/01_raw/mine.onnx)" in message
    assert message.endswith("(set compression.prune.required: false to pass it on)")
    # quantize applies to a graph: requiring it changes nothing
    plan = nodes.plan_compression(record.disabled(), {"quantize": {"required": True}}, source)
    assert plan["quantize"]["enabled"]


def test_a_technique_whose_parameters_lack_required_is_refused_at_registration():
    class Bare(Strict):
        enabled: bool = True

    with pytest.raises(ValueError, match="must subclass TechniqueParams"):
        registry.register(registry.Technique("bare", Bare, rescale, output="b"), 45)
    assert "bare" not in [t.name for t in registry.techniques()]
