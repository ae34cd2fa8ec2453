from kedro_edge.fleet.inventory import parse_fleet
from kedro_edge.fleet.rollout import plan_waves


def _fleet(per_group: dict[str, int]):
    devices = [{"name": f"{g}{i}", "host": "h", "group": g} for g, n in per_group.items() for i in range(n)]
    return parse_fleet({"groups": {g: {} for g in per_group}, "devices": devices})


def names(plan):
    return [[d.name for d in wave] for wave in plan]


def test_canary_then_shares_per_group():
    fleet = _fleet({"pi": 8, "jet": 2})
    plan = plan_waves(fleet.devices, [1, "25%", "100%"])
    assert names(plan) == [["pi0", "jet0"], ["pi1"], ["pi2", "pi3", "pi4", "pi5", "pi6", "pi7", "jet1"]]


def test_every_device_once_and_empty_waves_dropped():
    fleet = _fleet({"pi": 3})
    plan = plan_waves(fleet.devices, [1, 1, "50%", "100%", "100%"])
    flat = [n for wave in names(plan) for n in wave]
    assert sorted(flat) == ["pi0", "pi1", "pi2"] and len(flat) == 3
    assert names(plan) == [["pi0"], ["pi1"], ["pi2"]]


def test_waves_that_stop_short_leave_devices_out():
    fleet = _fleet({"pi": 4})
    assert names(plan_waves(fleet.devices, [1, "50%"])) == [["pi0"], ["pi1"]]
