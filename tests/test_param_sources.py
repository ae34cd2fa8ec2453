from __future__ import annotations

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from kedro_edge.config import validate_parameters
from kedro_edge.errors import ConfigError
from kedro_edge.param_sources import RUNTIME, Layer, ParamSources

CNN = "kedro_edge.models.ResidualCNN"
OTHER = "pipelines.custom_models.SmallCNN"
BASE = "conf/base/parameters_training.yml"
LOCAL = "conf/local/parameters_training.yml"


def sources(runtime=None, local=None, base=None) -> ParamSources:
    return ParamSources([Layer(RUNTIME, runtime or {}), Layer(LOCAL, local or {}), Layer(BASE, base or {})])


def test_the_highest_layer_that_sets_a_key_is_named():
    src = sources(
        runtime={"training": {"epochs": 0}},
        local={"training": {"lr": 1}},
        base={"training": {"epochs": 3, "lr": 0.1, "seed": 0}},
    )
    assert src.where(["training", "epochs"]) == RUNTIME
    assert src.where(["training", "lr"]) == LOCAL
    assert src.where(["training", "seed"]) == BASE
    # a key nobody sets (a missing one, a cross-field check) falls back to its longest set prefix
    assert src.where(["training", "nothing"]) == RUNTIME
    assert src.where(["deployment", "x"]) is None


def test_a_switched_class_gets_only_the_kwargs_given_with_it():
    base = {"model": {"class_path": CNN, "kwargs": {"widths": [8, 16]}}}
    fixed, notes = sources(runtime={"model": {"class_path": OTHER}}, base=base).replace_stale_kwargs(
        {"model": {"class_path": OTHER, "kwargs": {"widths": [8, 16]}}}
    )
    assert fixed["model"] == {"class_path": OTHER, "kwargs": {}}
    assert len(notes) == 1 and f"replaces {CNN} ({BASE})" in notes[0] and "(from --params)" in notes[0]

    runtime = {"model": {"class_path": OTHER, "kwargs": {"width": 8}}}
    merged = {"model": {"class_path": OTHER, "kwargs": {"widths": [8, 16], "width": 8}}}
    fixed, _ = sources(runtime=runtime, base=base).replace_stale_kwargs(merged)
    assert fixed["model"]["kwargs"] == {"width": 8}


def test_kwargs_of_the_same_class_still_merge():
    base = {"model": {"class_path": CNN, "kwargs": {"widths": [8, 16], "depth": 2}}}
    merged = {"model": {"class_path": CNN, "kwargs": {"widths": [4], "depth": 2}}}
    # --params with kwargs only, or naming the same class again
    for runtime in (
        {"model": {"kwargs": {"widths": [4]}}},
        {"model": {"class_path": CNN, "kwargs": {"widths": [4]}}},
    ):
        fixed, notes = sources(runtime=runtime, base=base).replace_stale_kwargs(merged)
        assert fixed is merged and notes == []


def test_kwargs_follow_the_class_of_the_layer_below_them():
    # conf/local switches the class with its kwargs; --params then tunes one of those kwargs
    base = {"model": {"class_path": CNN, "kwargs": {"widths": [8, 16]}}}
    local = {"model": {"class_path": OTHER, "kwargs": {"width": 16}}}
    runtime = {"model": {"kwargs": {"width": 4}}}
    merged = {"model": {"class_path": OTHER, "kwargs": {"widths": [8, 16], "width": 4}}}
    fixed, _ = sources(runtime, local, base).replace_stale_kwargs(merged)
    assert fixed["model"]["kwargs"] == {"width": 4}
    # and switching back to the base class on the command line brings back the base kwargs
    merged = {"model": {"class_path": CNN, "kwargs": {"widths": [8, 16], "width": 16}}}
    fixed, _ = sources({"model": {"class_path": CNN}}, local, base).replace_stale_kwargs(merged)
    assert fixed["model"]["kwargs"] == {"widths": [8, 16]}


def test_the_distillation_student_follows_the_same_rule():
    base = {"compression": {"distill": {"student": {"class_path": CNN, "kwargs": {"widths": [4]}}}}}
    runtime = {"compression": {"distill": {"student": {"class_path": OTHER}}}}
    merged = {"compression": {"distill": {"student": {"class_path": OTHER, "kwargs": {"widths": [4]}}}}}
    fixed, _ = sources(runtime=runtime, base=base).replace_stale_kwargs(merged)
    assert fixed["compression"]["distill"]["student"] == {"class_path": OTHER, "kwargs": {}}
    assert merged["compression"]["distill"]["student"]["kwargs"] == {"widths": [4]}  # input untouched
    # `student: null` in base, set on the command line: nothing to drop
    null = {"compression": {"distill": {"student": None}}}
    runtime = {"compression": {"distill": {"student": {"class_path": OTHER, "kwargs": {"width": 4}}}}}
    merged = {"compression": {"distill": {"student": {"class_path": OTHER, "kwargs": {"width": 4}}}}}
    fixed, notes = sources(runtime=runtime, base=null).replace_stale_kwargs(merged)
    assert fixed is merged and notes == []


def _conf(tmp_path, base: dict[str, dict], local: dict[str, dict] | None = None):
    for env, files in (("base", base), ("local", local or {})):
        (tmp_path / "conf" / env).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (tmp_path / "conf" / env / name).write_text(yaml.safe_dump(content))
    return tmp_path / "conf"


@pytest.mark.parametrize("strategy", ["soft", "destructive"])
def test_layers_are_read_from_the_config_loader(tmp_path, strategy):
    conf = _conf(
        tmp_path,
        base={
            "parameters_training.yml": {"training": {"epochs": 3, "lr": 0.1}},
            "parameters_compression.yml": {"compression": {"prune": {"ratio": 0.5, "steps": 2}}},
        },
        local={"parameters_compression.yml": {"compression": {"prune": {"ratio": 0.6}}}},
    )
    loader = OmegaConfigLoader(
        str(conf),
        runtime_params={"training": {"epochs": 1}},
        base_env="base",
        default_run_env="local",
        merge_strategy={"parameters": strategy},
    )
    src = ParamSources.from_loader(loader, tmp_path)
    merged = loader["parameters"]
    assert src.where(["training", "epochs"]) == "--params"
    assert src.where(["compression", "prune", "ratio"]) == "conf/local/parameters_compression.yml"
    if strategy == "soft":
        assert src.where(["training", "lr"]) == "conf/base/parameters_training.yml"
        assert src.where(["compression", "prune", "steps"]) == "conf/base/parameters_compression.yml"
        assert merged["training"]["lr"] == 0.1 and merged["compression"]["prune"]["steps"] == 2
    else:
        # Kedro's default: a section set in conf/local (or in --params, once conf/local has a
        # parameters file) replaces base's whole section; the sources agree with what Kedro merged
        assert "lr" not in merged["training"] and "steps" not in merged["compression"]["prune"]
        assert src.where(["training", "lr"]) == "--params"
        assert src.where(["compression", "prune", "steps"]) == "conf/local/parameters_compression.yml"


def test_validation_names_where_the_bad_key_came_from():
    local = "conf/local/parameters_compression.yml"
    src = ParamSources(
        [
            Layer(RUNTIME, {"training": {"epochs": 0}}),
            Layer(local, {"compression": {"prune": {"ratoi": 0.5}}}),
            Layer("conf/base/parameters_compression.yml", {"compression": {"prune": {"ratio": 0.5}}}),
        ]
    )
    with pytest.raises(ConfigError) as err:
        validate_parameters({"training": {"epochs": 0}}, src)
    assert str(err.value).startswith("--params: parameter 'training.epochs': ")
    with pytest.raises(ConfigError) as err:
        validate_parameters({"compression": {"prune": {"ratio": 0.5, "ratoi": 0.5}}}, src)
    assert str(err.value) == f"{local}: unknown parameter key 'compression.prune.ratoi'"
