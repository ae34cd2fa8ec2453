"""The hooks on a real ``KedroContext`` and ``OmegaConfigLoader`` over a temporary conf/ folder."""

from __future__ import annotations

import sys

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.context import KedroContext
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from kedro_edge.errors import ConfigError
from kedro_edge.hooks import EdgeHooks

CNN = "kedro_edge.models.ResidualCNN"
OTHER = "pipelines.custom_models.SmallCNN"
BASE = {
    "parameters_training.yml": {
        "model": {"class_path": CNN, "kwargs": {"widths": [8, 16]}},
        "training": {"epochs": 3, "lr": 0.01},
    },
    "parameters_compression.yml": {"compression": {"prune": {"ratio": 0.5}}},
}


@pytest.fixture(autouse=True)
def _keep_excepthook(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the hook installs its own


def context(tmp_path, runtime=None, local=None) -> KedroContext:
    """A context as ``KedroSession.load_context`` makes it, after our ``after_context_created``."""
    for env, files in (("base", {**BASE, "catalog.yml": {"x": {"type": "MemoryDataset"}}}), ("local", local)):
        (tmp_path / "conf" / env).mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            (tmp_path / "conf" / env / name).write_text(yaml.safe_dump(content))
    loader = OmegaConfigLoader(
        str(tmp_path / "conf"),
        runtime_params=runtime,
        base_env="base",
        default_run_env="local",
        merge_strategy={"parameters": "soft"},  # as pipelines/settings.py
    )
    ctx = KedroContext(
        project_path=tmp_path,
        config_loader=loader,
        env=None,
        package_name="pipelines",
        hook_manager=_create_hook_manager(),
        runtime_params=runtime,
    )
    EdgeHooks().after_context_created(ctx)
    return ctx


def test_a_class_switched_on_the_command_line_gets_no_stale_kwargs(tmp_path):
    ctx = context(tmp_path, runtime={"model": {"class_path": OTHER}})
    assert ctx.params["model"] == {"class_path": OTHER, "kwargs": {}}
    # what the nodes get: the catalog's params: entries
    catalog = ctx.catalog
    assert catalog.get("params:model").load() == {"class_path": OTHER, "kwargs": {}}
    assert "params:model.kwargs.widths" not in catalog
    assert catalog.get("params:training").load() == {"epochs": 3, "lr": 0.01}  # the rest is as merged


def test_kwargs_given_with_the_new_class_are_kept(tmp_path):
    ctx = context(tmp_path, runtime={"model": {"class_path": OTHER, "kwargs": {"width": 8}}})
    assert ctx.catalog.get("params:model.kwargs").load() == {"width": 8}


def test_a_class_switched_in_conf_local_gets_its_own_kwargs(tmp_path):
    local = {"parameters.yml": {"model": {"class_path": OTHER, "kwargs": {"width": 4}}}}
    ctx = context(tmp_path, local=local)
    assert ctx.params["model"] == {"class_path": OTHER, "kwargs": {"width": 4}}


def test_runtime_params_keep_the_rest_of_their_section_with_conf_local_files(tmp_path):
    local = {"parameters_compression.yml": {"compression": {"prune": {"ratio": 0.6}}}}
    ctx = context(tmp_path, runtime={"training": {"epochs": 1}}, local=local)
    assert ctx.params["training"] == {"epochs": 1, "lr": 0.01}
    assert ctx.params["model"]["kwargs"] == {"widths": [8, 16]}  # same class: untouched


@pytest.mark.parametrize(
    ("runtime", "local", "message"),
    [
        ({"training": {"epochs": 0}}, None, "--params: parameter 'training.epochs': "),
        (
            None,
            {"parameters_compression.yml": {"compression": {"prune": {"ratio": 1.5}}}},
            "conf/local/parameters_compression.yml: parameter 'compression.prune.ratio': ",
        ),
        (
            {"compression": {"prune": {"ratio": 1.5}}},
            {"parameters_compression.yml": {"compression": {"prune": {"ratio": 0.9}}}},
            "--params: parameter 'compression.prune.ratio': ",
        ),
        (
            None,
            {"parameters_compression.yml": {"compression": {"prune": {"ratoi": 0.5}}}},
            "conf/local/parameters_compression.yml: unknown parameter key 'compression.prune.ratoi'",
        ),
    ],
)
def test_a_bad_parameter_names_its_source(tmp_path, runtime, local, message):
    with pytest.raises(ConfigError) as err:
        context(tmp_path, runtime=runtime, local=local)
    assert str(err.value).startswith(message)


def _params_pipeline(*names: str) -> Pipeline:
    return Pipeline([node(lambda *a: 0, list(names), "out", name="uses_params")])


def test_a_model_class_that_cannot_be_imported_stops_the_run_before_any_node(tmp_path):
    catalog = DataCatalog({"params:model": MemoryDataset({"class_path": "nowhere.Model"})})
    with pytest.raises(ConfigError, match=r"parameter 'model\.class_path': cannot import 'nowhere\.Model'"):
        EdgeHooks().before_pipeline_run(pipeline=_params_pipeline("params:model"), catalog=catalog)

    student = {"distill": {"student": {"class_path": "kedro_edge.models.Nowhere"}}}
    catalog = DataCatalog({"params:compression": MemoryDataset(student)})
    with pytest.raises(ConfigError, match=r"'compression\.distill\.student\.class_path': cannot import"):
        EdgeHooks().before_pipeline_run(pipeline=_params_pipeline("params:compression"), catalog=catalog)

    # a pipeline that uses no model (deployment) is not stopped by one
    EdgeHooks().before_pipeline_run(pipeline=_params_pipeline("params:training"), catalog=catalog)


def test_settings_conf_base_does_not_have_are_said_in_one_line_naming_key_and_file(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setenv("DVC_STAGE", "compression")
    local = {
        "parameters_compression.yml": {"compression": {"prune": {"ratio": 0.6}}},
        "parameters_training.yml": {"training": {"epochs": 3}},  # the same as conf/base: not an override
        "catalog.yml": {"x": {"type": "MemoryDataset"}, "y": {"type": "MemoryDataset"}},  # y is new
        "credentials.yml": {"device_password": "hunter2"},
    }
    with caplog.at_level("WARNING", logger="kedro_edge.hooks"):
        context(tmp_path, runtime={"training": {"lr": 0.1}}, local=local)
    lines = [r.getMessage() for r in caplog.records if "conf/base does not have" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("dvc repro stage 'compression' runs settings conf/base does not have")
    assert "training.lr (--params)" in line
    assert "compression.prune.ratio (conf/local/parameters_compression.yml)" in line
    assert "catalog y (conf/local/catalog.yml)" in line
    assert "epochs" not in line and "catalog x" not in line and "hunter2" not in line


def test_a_run_on_conf_base_alone_says_nothing(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="kedro_edge.hooks"):
        context(tmp_path)
    assert not [r for r in caplog.records if "conf/base does not have" in r.getMessage()]
