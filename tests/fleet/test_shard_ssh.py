"""A release sharded into batches, each phase a task: one record, one rollout id, the same gates.

On a loopback fleet of real OpenSSH servers; the tasks run in this process, in order (the
Dagster job that runs them as separate processes is tested in tests/orchestration).
"""

from __future__ import annotations

import pytest

from kedro_edge.config import RegressionParams
from kedro_edge.fleet import shard
from tests.conftest import needs_sshd
from tests.fleet.loopback import CFG, active, assert_whole, candidate, decisions, history, model, registry

pytestmark = needs_sshd

NAMES = ["d0", "d1", "d2", "d3", "d4"]
# sharding, not gates, is under test here: one quick measurement per device
SHARDED = CFG.model_copy(
    update={"waves": [1, "100%"], "regression": RegressionParams(enabled=False, blocks=3)}
)
QUICK = {"warmup": 0, "min_runs": 20, "min_seconds": 0.0}
STATE: dict[str, str] = {}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def release(fleet, tmp_path, seed: int, rollout_id: str, **overrides) -> shard.Release:
    cand, reference = candidate(tmp_path, model(seed=seed))
    return shard.Release(registry(fleet, group=QUICK, **overrides), cand, reference, SHARDED, rollout_id)


def test_waves_are_cut_into_batches_of_at_most_batch_size(fleet, tmp_path):
    fleet_registry = registry(fleet)
    assert shard.plan(fleet_registry, NAMES, [1, "100%"], batch_size=2) == [
        [["d0"]],
        [["d1", "d2"], ["d3", "d4"]],
    ]
    with pytest.raises(ValueError, match="batch_size 1001 must be between 1 and 1000"):
        shard.plan(fleet_registry, NAMES, [1, "100%"], batch_size=1001)


def test_a_sharded_release_goes_out_under_one_rollout_id_with_one_record(fleet, tmp_path):
    rel = release(fleet, tmp_path, seed=51, rollout_id="sharded-1")
    record = shard.sharded_rollout(rel, NAMES, batch_size=2).to_json()
    assert record["verdict"] == "released", decisions(record)
    assert [(w["wave"], w["batches"], w["outcome"]) for w in record["waves"]] == [
        (1, 1, "passed"),
        (2, 2, "passed"),
    ]
    assert [e["device"] for e in record["devices"]] == NAMES
    for entry in record["devices"]:
        # the install task's figures and the activate task's decision, in one entry
        assert entry["decision"] == "activated" and entry["measurement"]["p50_ms"] > 0
        assert entry["ssh_connections"] >= 2  # one per task that reached it: install, activate (, release)
    for name in NAMES:
        assert active(fleet, name) == rel.candidate.sha256
        assert history(fleet, name)[-1]["rollout"] == "sharded-1"
    assert_whole(fleet, NAMES)
    STATE["released"] = rel.candidate.sha256


def test_a_failure_in_one_batch_stops_the_other_batches_of_its_wave_and_rolls_back_earlier_waves(
    fleet, tmp_path
):
    rel = release(fleet, tmp_path, seed=52, rollout_id="sharded-2", d4={"python": "/bin/false"})
    record = shard.sharded_rollout(rel, NAMES, batch_size=2).to_json()
    assert record["verdict"] == "rolled_back"
    assert record["waves"][-1]["outcome"] == "aborted" and record["waves"][-1]["failed"] == ["d4"]
    assert decisions(record) == {
        "d0": "rolled back",  # wave 1 had activated it
        "d1": "not activated", "d2": "not activated", "d3": "not activated",  # passed, in other batches
        "d4": "failed",  # its agent cannot run
    }  # fmt: skip
    for name in NAMES:  # nothing of the refused release is active anywhere
        assert active(fleet, name) == STATE["released"]
    assert_whole(fleet, NAMES)
