import pytest

from kedro_edge.config import (
    CompressionParams,
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
