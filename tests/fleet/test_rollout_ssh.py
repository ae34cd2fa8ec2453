"""Gated, staged rollouts and rollbacks on a loopback fleet of real OpenSSH servers.

The tests share one fleet and run in order: each starts from the state the previous left.
"""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from kedro_edge.fleet import device as ops
from kedro_edge.fleet.commands import rollback_devices, survey
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.ssh import SSHEndpoint
from tests.conftest import needs_sshd
from tests.fleet.loopback import (
    CFG,
    active,
    assert_whole,
    candidate,
    decisions,
    history,
    model,
    registry,
    run,
)

pytestmark = needs_sshd

FLEET = ["fresh", "dev1", "dev2", "dev3", "dev4"]  # fresh: in no rollout until the rollback test
MAIN = FLEET[1:]
STATE: dict[str, str] = {}  # what the shared fleet runs, for the tests that follow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), FLEET, port=0) as running:
        yield running


def test_a_good_first_release_goes_out_wave_by_wave(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=1))
    record = run(fleet, cand, reference, MAIN)
    assert record["verdict"] == "released"
    assert [w["devices"] for w in record["waves"]] == [["dev1"], ["dev2"], ["dev3", "dev4"]]
    assert set(decisions(record).values()) == {"activated"}
    for name in MAIN:
        assert active(fleet, name) == cand.sha256
        assert [(e["event"], e["sha"]) for e in history(fleet, name)] == [("released", cand.sha256)]
        assert history(fleet, name)[0]["rollout"] == record["rollout_id"]
    gate = record["devices"][0]["gates"][0]
    assert gate["gate"] == "no_regression" and "no active release" in gate["reason"]
    assert_whole(fleet, MAIN)
    STATE["first"] = STATE["good"] = cand.sha256


def test_a_second_good_release_is_compared_interleaved_and_promoted(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=2))
    # as many benchmarks as installs at once: measured in the command that streamed it in
    cfg = CFG.model_copy(update={"max_parallel_benchmarks": CFG.max_parallel})
    record = run(fleet, cand, reference, MAIN, cfg=cfg)
    assert record["verdict"] == "released", record
    for entry in record["devices"]:
        m = entry["measurement"]
        assert len(m["block_p50_ms"]) == CFG.regression.blocks == len(m["baseline"]["block_p50_ms"])
        (gate,) = entry["gates"]
        assert gate["passed"] and "Wilcoxon signed-rank" in gate["reason"]
        assert entry["bytes_sent"] == cand.shipped_bytes < cand.upload_bytes  # the model went lzma'd
        assert entry["ssh_connections"] == 1
    # last wave: begin (stream, verify, install, measure) + activate (releasing the lease)
    assert [e["remote_commands"] for e in record["devices"]] == [3, 3, 2, 2]  # earlier waves: + release
    # previous points at what a rollback returns to
    assert (fleet.device("dev1")["workdir"] / "previous").resolve().name == STATE["good"]
    assert_whole(fleet, MAIN)
    STATE["good"] = cand.sha256


def test_a_clearly_slower_candidate_is_refused_on_the_canary_and_recorded(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model((64, 128, 256), seed=3))  # unpruned, several times slower
    record = run(fleet, cand, reference, MAIN)
    assert record["verdict"] == "blocked"
    assert decisions(record) == {
        "dev1": "refused", "dev2": "not reached", "dev3": "not reached", "dev4": "not reached"
    }  # fmt: skip
    assert "regression" in record["devices"][0]["reason"]
    assert record["devices"][0]["gates"][0]["value"] > 0.5  # measured: much more than 50% slower
    assert (
        history(fleet, "dev1")[-1]["event"] == "refused" and history(fleet, "dev1")[-1]["sha"] == cand.sha256
    )
    for name in MAIN:  # never active anywhere; only the canary even received it
        assert active(fleet, name) == STATE["good"]
    assert not (fleet.device("dev2")["workdir"] / "versions" / cand.sha256).exists()
    assert_whole(fleet, MAIN)
    STATE["refused"] = cand.sha256


def test_a_device_failing_parity_stops_the_rollout(fleet, tmp_path):
    validated = model(seed=4)
    perturbed = model(seed=4, noise=0.3)  # what actually reached the device
    cand, reference = candidate(tmp_path, perturbed, reference_net=validated)
    record = run(fleet, cand, reference, MAIN, budgets={"min_top1_agreement": 0.99, "max_abs_diff": 1e-3})
    assert record["verdict"] == "blocked"
    canary = record["devices"][0]
    assert canary["decision"] == "refused" and "top-1 agreement" in canary["reason"]
    assert all(active(fleet, n) == STATE["good"] for n in MAIN)
    assert_whole(fleet, MAIN)


def test_a_failing_later_wave_rolls_back_every_device_this_rollout_activated(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=5))
    fleet.stop_device("dev3")
    try:
        cfg = CFG.model_copy(update={"waves": [2, "100%"]})
        over = {"dev3": {"connect_attempts": 1}}
        record = run(fleet, cand, reference, ["fresh", "dev1", "dev2", "dev3"], cfg=cfg, overrides=over)
    finally:
        fleet.start_device("dev3")
    assert record["verdict"] == "rolled_back"
    assert [w["outcome"] for w in record["waves"]] == ["passed", "aborted"]
    assert decisions(record) == {
        "fresh": "rolled back", "dev1": "rolled back", "dev2": "not activated", "dev3": "failed"
    }  # fmt: skip
    assert "cannot connect" in record["devices"][3]["reason"]
    assert active(fleet, "dev1") == STATE["good"]  # back on the release it had
    assert active(fleet, "fresh") is None  # never had a release: nothing active
    assert active(fleet, "dev2") == STATE["good"]  # its wave was never activated
    assert history(fleet, "dev1")[-1]["event"] == "rolled back"
    assert_whole(fleet, ["fresh", "dev1", "dev2", "dev3"])
    STATE["rolled back"] = cand.sha256


def test_rollback_never_brings_back_a_refused_or_rolled_back_version_and_never_toggles(fleet):
    registered = registry(fleet)
    dev1 = registered.select(["dev1"])
    # before: dev1 runs "good"; "rolled back" was activated and undone; "refused" was refused
    (back,) = rollback_devices(registered, dev1)
    assert back.status == "ok", back.error
    assert active(fleet, "dev1") == STATE["first"]  # the release before good: not the rolled-back one
    (again,) = rollback_devices(registered, dev1)
    assert again.status == "failed" and "nothing older to roll back to" in again.error
    assert active(fleet, "dev1") == STATE["first"]  # no toggling back to "good"
    for bad in (STATE["refused"], STATE["rolled back"]):
        if not (fleet.device("dev1")["workdir"] / "versions" / bad).exists():
            continue  # collected: "is not on this device" is the answer then
        (refused,) = rollback_devices(registered, dev1, to=bad)
        assert refused.status == "failed" and (
            "was refused" in refused.error or "not released" in refused.error
        )
    assert active(fleet, "dev1") == STATE["first"]
    (missing,) = rollback_devices(registered, dev1, to="f" * 64)
    assert missing.status == "failed" and "is not on this device" in missing.error
    assert_whole(fleet, ["dev1"])


def test_forcing_a_version_that_was_not_released_is_recorded(fleet):
    registered = registry(fleet)
    dev1 = registered.select(["dev1"])
    target = STATE["rolled back"]
    (forced,) = rollback_devices(registered, dev1, to=target, force=True)
    assert forced.status == "ok", forced.error
    assert active(fleet, "dev1") == target
    assert history(fleet, "dev1")[-1]["event"] == "forced"
    (back,) = rollback_devices(registered, dev1)  # a rollback undoes the force
    assert back.status == "ok" and active(fleet, "dev1") == STATE["first"]
    # put dev1 back on "good" for the rest: an explicit --to of a version released there
    (restore,) = rollback_devices(registered, dev1, to=STATE["good"], force=True)
    assert restore.status == "ok" and active(fleet, "dev1") == STATE["good"]


def test_an_interrupted_rollout_resumes_under_the_same_id(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=6))

    def killed_after_first_wave(number: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(fleet, cand, reference, MAIN, on_wave=killed_after_first_wave)
    for name in MAIN:  # every device has a complete active version
        current = fleet.device(name)["workdir"] / "current"
        assert hashlib.sha256((current / "model.onnx").read_bytes()).hexdigest() == current.resolve().name
    assert active(fleet, "dev1") == cand.sha256 and active(fleet, "dev2") == STATE["good"]
    first_id = history(fleet, "dev1")[-1]["rollout"]

    record = run(fleet, cand, reference, MAIN)
    assert record["verdict"] == "released" and record["resumed"] and record["rollout_id"] == first_id
    assert decisions(record)["dev1"] == "already active"
    assert record["devices"][0]["remote_commands"] == 2  # begin (lease), release: no benchmark
    assert all(active(fleet, n) == cand.sha256 for n in MAIN)
    assert_whole(fleet, MAIN)
    STATE["good"] = cand.sha256


def test_a_device_held_by_another_rollout_is_reported_busy_and_rollback_needs_the_lease(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=7))
    other, _ = candidate(tmp_path, model(seed=8))
    dev1 = registry(fleet).select(["dev1"])[0]
    holder, theirs = SSHEndpoint(dev1), Lease("another-rollout", ttl=60)
    ops.ship(holder, other, theirs)  # another rollout, mid-way on dev1
    record = run(fleet, cand, reference, MAIN, cfg=CFG.model_copy(update={"lock_timeout": 1}))
    assert record["verdict"] == "blocked"
    assert "busy: rollout another-rollout" in record["devices"][0]["reason"]
    (rb,) = rollback_devices(registry(fleet), [dev1], lock_timeout=1)
    assert rb.status == "failed" and "busy" in rb.error  # a rollback does not switch under a rollout
    assert active(fleet, "dev1") == STATE["good"]
    ops.release(holder, theirs)
    holder.close()
    assert run(fleet, cand, reference, MAIN)["verdict"] == "released"  # free again
    assert_whole(fleet, MAIN)
    STATE["good"] = cand.sha256


def test_a_rollback_issued_during_a_rollout_waits_its_turn(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=11))
    answers = []

    def rollback_after_first_wave(number: int) -> None:
        if number == 1:  # dev1 is activated and still under this rollout's lease
            answers.extend(
                rollback_devices(registry(fleet), registry(fleet).select(["dev1"]), lock_timeout=1)
            )

    record = run(fleet, cand, reference, MAIN, on_wave=rollback_after_first_wave)
    assert answers[0].status == "failed" and "busy" in answers[0].error
    assert record["verdict"] == "released" and all(active(fleet, n) == cand.sha256 for n in MAIN)
    assert_whole(fleet, MAIN)
    STATE["good"] = cand.sha256


def test_two_concurrent_rollouts_of_the_same_model_exclude_each_other(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=9))
    cfg = CFG.model_copy(update={"waves": ["100%"], "lock_timeout": 1})
    records = []
    threads = [
        threading.Thread(target=lambda: records.append(run(fleet, cand, reference, MAIN, cfg=cfg)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert records[0]["rollout_id"] != records[1]["rollout_id"]
    for name in MAIN:
        assert active(fleet, name) in (cand.sha256, STATE["good"])
        released = [e for e in history(fleet, name) if e["sha"] == cand.sha256 and e["event"] == "released"]
        assert len(released) <= 1  # never installed twice over each other
    assert_whole(fleet, MAIN)
    for record in records:
        for entry in record["devices"]:
            assert entry["decision"] in (
                "activated",
                "already active",
                "failed",
                "refused",
                "not activated",
            ), entry
            if entry["decision"] == "failed":
                assert "busy" in entry["reason"]


def test_status_reads_releases_and_creates_nothing(fleet, tmp_path):
    registered = registry(fleet)
    outcomes = {o.device: o.data for o in survey(registered, registered.select(MAIN))}
    for name in MAIN:
        assert outcomes[name]["current"] == active(fleet, name)
        assert outcomes[name]["released"][0] == active(fleet, name)
        assert outcomes[name]["lease"] is None
    assert json.dumps(outcomes)  # plain data
