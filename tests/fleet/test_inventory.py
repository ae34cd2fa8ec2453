import pytest

from kedro_edge.errors import ConfigError
from kedro_edge.fleet.inventory import load_fleet, parse_fleet

GOOD = {
    "defaults": {"user": "pi", "port": 2222, "key_filename": "~/.ssh/id_ed25519"},
    "groups": {"pis": {"threads": 4, "budgets": {"p90_ms": 5}}, "default": {}},
    "devices": [
        {"name": "kitchen", "host": "192.0.2.1", "group": "pis", "labels": {"site": "home"}},
        {"name": "gateway", "host": "192.0.2.2", "user": "admin"},
        {"name": "me", "transport": "local"},
    ],
}


def test_defaults_are_inherited_and_a_device_wins():
    fleet = parse_fleet(GOOD)
    kitchen, gateway, me = fleet.devices
    assert (kitchen.user, kitchen.port, kitchen.group) == ("pi", 2222, "pis")
    assert gateway.user == "admin"
    assert fleet.groups["pis"].budgets.p90_ms == 5
    assert me.host is None and me.transport == "local"
    assert [d.name for d in fleet.select(group="pis")] == ["kitchen"]
    assert [d.name for d in fleet.select(["gateway"])] == ["gateway"]


def test_unset_keys_stay_unset_for_ssh_config_to_fill():
    device = parse_fleet({"devices": [{"name": "a", "host": "h"}]}).devices[0]
    assert device.user is None and device.port is None and device.key_filename is None


def _with(**device):
    return {"groups": {"default": {}}, "devices": [{"name": "pi", "host": "h", **device}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with(hots="x"), "device 'pi': unknown key 'hots'"),
        (_with(port=70000), "device 'pi': key 'port'"),
        (_with(port="ssh"), "device 'pi': key 'port'"),
        (_with(group="jetsons"), "device 'pi': group 'jetsons' is not defined in 'groups'"),
        (_with(host=None), "device 'pi': 'host' is required"),
        (_with(host_key_fingerprint="MD5:ab"), "key 'host_key_fingerprint'"),
        ({"devices": [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}]}, "duplicate device name 'a'"),
        ({"devices": [{"host": "h"}]}, "device #1: key 'name'"),
        ({"devices": []}, "needs a non-empty 'devices:' list"),
        ({"devices": [{"name": "a", "host": "h"}], "defaults": {"prot": 1}}, "defaults: unknown key 'prot'"),
        ({"devices": [{"name": "a", "host": "h"}], "groups": {"g": {"treads": 2}}}, "groups: unknown key"),
        ({"devices": [{"name": "a", "host": "h"}], "extra": 1}, "unknown top-level key 'extra'"),
        ({"devices": [{"name": "a/b", "host": "h"}]}, "without '/'"),
    ],
)
def test_bad_registry_names_the_device_and_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_fleet(raw, "devices.yml")
    assert message in str(err.value)
    assert str(err.value).startswith("devices.yml: ")
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="devices.yml: file not found"):
        load_fleet(tmp_path / "devices.yml")
    (tmp_path / "devices.yml").write_text("devices: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_fleet(tmp_path / "devices.yml")


def test_selecting_an_unknown_device_is_an_error():
    with pytest.raises(ConfigError, match="no device named 'attic'"):
        parse_fleet(GOOD).select(["attic"])


def test_the_shipped_registry_is_valid_and_runs_here():
    from pathlib import Path

    fleet = load_fleet(Path(__file__).resolve().parents[2] / "devices.yml")
    assert [d.transport for d in fleet.devices] == ["local"]
