import pytest

from kedro_edge.config import (
    CompressionParams,
    DeploymentParams,
    PruneParams,
    TrainParams,
    parse,
    validate_parameters,
)
from kedro_edge.errors import ConfigError


def test_unknown_key_is_named_with_its_path_and_file():
    with pytest.raises(ConfigError) as err:
        parse(CompressionParams, {"prune": {"ratoi": 0.5}}, "compression")
    msg = str(err.value)
    assert "compression.prune.ratoi" in msg and "unknown" in msg
    assert "parameters_compression.yml" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1])
def test_ratio_out_of_range_is_refused(ratio):
    with pytest.raises(ConfigError, match=r"compression\.prune\.ratio"):
        parse(CompressionParams, {"prune": {"ratio": ratio}}, "compression")


def test_ratio_and_target_macs_are_exclusive():
    with pytest.raises(ConfigError, match="exactly one of 'ratio' and 'target_macs'"):
        parse(PruneParams, {"ratio": 0.5, "target_macs": 0.3}, "compression.prune")


def test_wrong_type_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"training\.epochs.*'many'"):
        parse(TrainParams, {"epochs": "many"}, "training")


def test_validate_parameters_checks_every_known_section_and_ignores_others():
    good = validate_parameters({"training": {"epochs": 3}, "someone_elses": {"x": 1}})
    assert good["training"].epochs == 3
    with pytest.raises(ConfigError, match=r"validation\.gates\.max_acuracy_drop"):
        validate_parameters({"validation": {"gates": {"max_acuracy_drop": 1}}})


def test_defaults_are_valid():
    assert parse(CompressionParams, None, "compression").prune.ratio == 0.5


def test_without_sources_a_nested_section_names_its_conventional_base_file():
    with pytest.raises(ConfigError) as err:
        parse(PruneParams, {"ratoi": 0.5}, "compression.prune")
    expected = "conf/base/parameters_compression.yml: unknown parameter key 'compression.prune.ratoi'"
    assert str(err.value) == expected


@pytest.mark.parametrize(
    ("blocks", "alpha", "smallest"),
    [
        (3, 0.05, "0.125"),
        (4, 0.05, "0.0625"),
        (5, 0.01, "0.0312"),
        (3, 0.125, "0.125"),
        (9, 0.001, "0.00195"),
    ],
)
def test_a_regression_gate_that_can_never_fire_is_refused_naming_blocks_and_alpha(blocks, alpha, smallest):
    with pytest.raises(ConfigError) as err:
        parse(DeploymentParams, {"regression": {"blocks": blocks, "alpha": alpha}}, "deployment")
    msg = str(err.value)
    assert msg.startswith(
        "conf/base/parameters_deployment.yml: parameter 'deployment.regression': "
        f"blocks {blocks} with alpha {alpha:g} can never call a regression "
        f"(smallest achievable one-sided p = {smallest} >= alpha); use more blocks or a larger alpha"
    )
    assert "\n" not in msg


@pytest.mark.parametrize(("blocks", "alpha"), [(5, 0.05), (10, 0.05), (10, 0.001), (3, 0.2), (20, 1e-6)])
def test_a_regression_gate_that_can_fire_is_accepted(blocks, alpha):
    cfg = parse(DeploymentParams, {"regression": {"blocks": blocks, "alpha": alpha}}, "deployment")
    assert (cfg.regression.blocks, cfg.regression.alpha) == (blocks, alpha)


def test_the_default_regression_gate_can_fire_and_a_switched_off_one_is_not_checked():
    assert parse(DeploymentParams, None, "deployment").regression.blocks == 10  # 1/1024 < 0.05
    off = parse(DeploymentParams, {"regression": {"enabled": False, "blocks": 3}}, "deployment")
    assert off.regression.blocks == 3
