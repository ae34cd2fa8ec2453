"""The release's typed records read the JSON a release writes and give the same JSON back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from kedro_edge.fleet import shard
from kedro_edge.fleet.inventory import parse_fleet
from kedro_edge.fleet.params import DeploymentParams
from kedro_edge.fleet.records import (
    BenchmarkReport,
    Decision,
    DeviceEntry,
    ReleaseRecord,
    Status,
    Verdict,
    WaveRecord,
)
from kedro_edge.fleet.spec import ReleaseSpec

REPORTS = Path(__file__).resolve().parents[2] / "data" / "08_reporting"


@pytest.mark.parametrize(
    ("record", "name"), [(ReleaseRecord, "release.json"), (BenchmarkReport, "device_benchmarks.json")]
)
def test_the_committed_reports_read_back_as_written(record, name):
    text = (REPORTS / name).read_text()
    read = record.from_json(json.loads(text))
    assert read.to_json() == json.loads(text)
    assert json.dumps(read.to_json(), indent=2) + "\n" == text  # as kedro_edge.io.JsonDataset writes it


def test_the_committed_release_reads_as_typed_values():
    release = ReleaseRecord.from_json(json.loads((REPORTS / "release.json").read_text()))
    assert release.verdict is Verdict.RELEASED
    assert all(isinstance(d.decision, Decision) for d in release.devices)
    benchmarks = BenchmarkReport.from_json(json.loads((REPORTS / "device_benchmarks.json").read_text()))
    assert all(d.status is Status.OK for d in benchmarks.devices)


def test_a_decision_or_verdict_outside_its_enum_is_refused():
    with pytest.raises(ValidationError, match="decision"):
        DeviceEntry(device="d0", decision="maybe")
    entry = DeviceEntry(device="d0", decision="refused")
    assert entry.decision is Decision.REFUSED
    with pytest.raises(ValidationError, match="decision"):
        entry.decision = "shipped"  # assignments are checked too
    release = json.loads((REPORTS / "release.json").read_text())
    with pytest.raises(ValidationError, match="verdict"):
        ReleaseRecord.from_json({**release, "verdict": "mostly released"})
    with pytest.raises(ValidationError, match="outcome"):
        WaveRecord(wave=1, devices=[], failed=[], failure_percentage=0.0, outcome="stalled")


def test_members_read_as_their_values():
    assert f"{Decision.ALREADY_ACTIVE}" == str(Decision.ALREADY_ACTIVE) == "already active"
    assert json.dumps({"verdict": Verdict.ROLLED_BACK}) == '{"verdict": "rolled_back"}'
    assert Decision.NOT_REACHED == "not reached"


def test_an_entry_writes_the_keys_its_steps_set_and_a_later_task_adds_to_it():
    entry = DeviceEntry(device="d0", group="pi", wave=1, decision=None)
    assert entry.to_json() == {"device": "d0", "group": "pi", "wave": 1, "decision": None}
    entry.update(decision=Decision.PASSED, before=None, ssh_connections=1)
    later = DeviceEntry(device="d0", decision=Decision.ACTIVATED, ssh_connections=2, bytes_sent=5)
    entry.absorb(later)
    assert entry.to_json() == {
        "device": "d0", "group": "pi", "wave": 1, "decision": "activated", "before": None,
        "ssh_connections": 3, "bytes_sent": 5,
    }  # fmt: skip
    entry.absorb(DeviceEntry(device="d0", decision=Decision.NOT_REACHED))  # no news: kept
    assert entry.decision is Decision.ACTIVATED


def test_the_sharded_state_keeps_its_shape_through_json():
    prepared = shard.BatchResult(
        wave=1, failed=[], controller={"connections_peak": 1, "lease_renewals": 0},
        entries=[DeviceEntry(device="d0", group="pi", wave=1, decision=Decision.PASSED)],
    )  # fmt: skip
    state, ready = shard.after_prepare(shard.start(), 1, [prepared], DeploymentParams())
    assert ready == [["d0"]]
    assert state.to_json() == {
        "waves": [{"wave": 1, "devices": ["d0"], "failed": [], "failure_percentage": 0.0,
                   "outcome": "passed", "batches": 1}],
        "results": [{"wave": 1, "entries": [{"device": "d0", "group": "pi", "wave": 1, "decision": "passed"}],
                     "failed": [], "controller": {"connections_peak": 1, "lease_renewals": 0}}],
        "activated": [], "aborted": False,
    }  # fmt: skip
    assert shard.ShardState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_the_release_spec_and_shard_plan_round_trip_through_json():
    version = {"sha256": "ab" * 32}
    spec = ReleaseSpec(
        model=b"\x00onnx bytes\xff", version=version, created_utc="2026-01-01T00:00:00+00:00",
        codec="lzma", manifest={"model": version}, parity=np.arange(6, dtype=np.uint8).reshape(2, 3),
        reference=np.linspace(0, 1, 4, dtype=np.float32).reshape(2, 2), devices=["d0"],
    )  # fmt: skip
    fleet = parse_fleet({"devices": [{"name": "d0", "host": "127.0.0.1"}]})
    plan = shard.ShardPlan(spec, fleet, DeploymentParams(waves=[1, "50%"]), "r1", [[["d0"]]])
    back = shard.ShardPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert back.to_json() == plan.to_json()
    assert back.spec.model == spec.model and back.fleet == fleet and back.cfg == plan.cfg
    for name in ("parity", "reference"):
        got, want = getattr(back.spec, name), getattr(spec, name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
