"""The search space: stages by resolution, settings -> a recipe the pipeline runs, per-stage pruning."""

from __future__ import annotations

import optuna
import pytest

from kedro_edge.compress import prune
from kedro_edge.config import CompressionParams, PruneParams, SearchParams, SearchSpace
from kedro_edge.errors import ConfigError
from kedro_edge.models.footprint import footprint, output_layers
from kedro_edge.search.space import Settings, from_recipe, recipe_params, sample, stages, to_recipe
from tests.conftest import conv_out_channels


def test_stages_group_layers_by_output_resolution_and_leave_the_classifier(teacher, example):
    found = stages(teacher, example)
    assert [s.name for s in found] == ["8x8", "4x4"]  # digits are 8x8; the second stage strides to 4x4
    layers = [layer for s in found for layer in s.layers]
    assert output_layers(teacher)[0] not in [teacher.get_submodule(n) for n in layers]
    assert len(layers) == len(set(layers)) == len(conv_out_channels(teacher))


def test_per_stage_ratios_remove_channels_only_where_asked(teacher, example):
    found = {s.name: s for s in stages(teacher, example)}
    macs = footprint(teacher, example).macs
    before = {n: teacher.get_submodule(n).out_channels for s in found.values() for n in s.layers}
    settings = Settings(keep={"8x8": 0.5, "4x4": 1.0})
    recipe = to_recipe(settings, CompressionParams(), list(found.values()), exclude=[])
    prune.one_shot(teacher, example, recipe.prune)
    for name in found["8x8"].layers:
        assert teacher.get_submodule(name).out_channels == before[name] // 2
    untouched = [n for n in found["4x4"].layers if n not in found["8x8"].layers]
    assert untouched and all(teacher.get_submodule(n).out_channels == before[n] for n in untouched)
    assert footprint(teacher, example).macs < macs


def test_a_layer_ratio_naming_no_layer_is_refused_with_the_key(teacher, example):
    cfg = PruneParams(layer_ratios={"no.such.conv": 0.5})
    with pytest.raises(ConfigError, match=r"compression\.prune\.layer_ratios.*no\.such\.conv"):
        prune.one_shot(teacher, example, cfg)


def test_width_scales_every_stage_and_never_removes_a_stage_whole():
    s = Settings(keep={"a": 0.5, "b": 0.02}, width=0.5)
    assert s.kept("a") == 0.25 and s.kept("b") == 0.05  # MIN_KEEP


def test_a_recipe_carries_the_settings_into_compression_parameters(teacher, example):
    found = stages(teacher, example)
    settings = Settings(keep={"8x8": 0.75, "4x4": 0.5}, width=1.0, lowrank_energy=0.95, cluster_k=8)
    recipe = to_recipe(settings, CompressionParams(), found, exclude=["/stem/Conv"])
    assert recipe.search == SearchParams()  # the plan runs a recipe: no search, none of its settings
    assert recipe.lowrank.enabled and recipe.lowrank.energy == 0.95
    assert recipe.cluster.enabled and recipe.cluster.k == 8
    assert recipe.quantize.exclude == ["/stem/Conv"]
    assert set(recipe.prune.layer_ratios) == {n for s in found for n in s.layers}
    assert recipe.prune.layer_ratios[found[0].layers[0]] == 0.25
    assert CompressionParams.model_validate(recipe.model_dump(mode="json")) == recipe  # a valid plan file


def test_the_fixed_recipe_is_a_point_of_the_space_and_is_drawn_back_unchanged():
    cfg, space = CompressionParams(), SearchSpace()
    params = recipe_params(cfg, space, ["8x8", "4x4"])
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(params)
    drawn = sample(study.ask(), space, ["8x8", "4x4"], cfg)
    assert drawn == from_recipe(cfg, ["8x8", "4x4"])
    assert drawn.keep == {"8x8": 0.5, "4x4": 0.5} and drawn.cluster_k == 16 and drawn.width == 1.0


def test_a_space_without_a_technique_keeps_the_recipes_setting():
    cfg = CompressionParams.model_validate({"cluster": {"k": 32}})
    space = SearchSpace(keep=None, width=None, cluster_k=None, exclude_ends=False)
    drawn = sample(optuna.create_study().ask(), space, ["8x8"], cfg)
    assert drawn == Settings(keep={"8x8": 0.5}, cluster_k=32)


@pytest.mark.parametrize("bad", [{"keep": [0.0, 1.0]}, {"keep": [0.9, 0.5]}, {"lowrank_energy": [0.5, 1.2]}])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError):
        SearchSpace.model_validate(bad)
