"""One timing specification: every agent command line the host builds carries its flags, and the
agent reads back exactly the settings the parameters hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kedro_edge.bench import agent
from kedro_edge.compress.mixed_precision import Timing
from kedro_edge.config import SearchLatency, ValidationParams
from kedro_edge.fleet import device as ops
from kedro_edge.fleet import measure
from kedro_edge.fleet.candidate import Candidate
from kedro_edge.fleet.inventory import Group, parse_fleet
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.ssh import Result
from kedro_edge.runtimes.timing import TimingSpec
from kedro_edge.search import target

TIMING = {"threads": 2, "warmup": 7, "min_runs": 11, "min_seconds": 0.25}
BLOCKS = 4
SHA = "a" * 64


class Recorder:
    """An endpoint that keeps the agent's command line and answers what the caller needs."""

    def __init__(self, device) -> None:
        self.device, self.argv = device, None

    def run(self, argv, timeout=None, feed=None) -> Result:
        self.argv = argv
        return Result(0, json.dumps({"ok": True, "results": {}, "facts": {}, "received_bytes": 0}), "")

    def close(self) -> None:
        pass

    @property
    def agent_argv(self) -> list[str]:
        # sh -c SCRIPT kedro-edge WORKDIR AGENT_SHA PYTHON AGENT_FILE, then the agent's own argv
        return self.argv[8:]


@pytest.fixture
def fleet():
    group = {"providers": ["CPUExecutionProvider"], **TIMING}
    raw = {"groups": {"edge": group}, "devices": [{"name": "d", "transport": "local", "group": "edge"}]}
    return parse_fleet(raw)


def settings(argv: list[str]) -> dict:
    """What the agent runs with, from its own parser."""
    return agent._bench_settings(agent._parser().parse_args(argv))


def flags(argv: list[str]) -> list[str]:
    return argv[argv.index("--providers") : argv.index("--blocks") + 2]


def expected(max_samples: int) -> dict:
    return {"providers": ["CPUExecutionProvider"], "blocks": BLOCKS, "max_samples": max_samples, **TIMING}


def test_group_and_search_target_send_the_same_flags(fleet, monkeypatch):
    spec_flags = TimingSpec(**TIMING).agent_args(BLOCKS)
    device = fleet.devices[0]
    group = fleet.groups["edge"]

    bench = Recorder(device)
    ops.benchmark(bench, SHA, group, baseline="b" * 64, blocks=BLOCKS)
    assert flags(bench.agent_argv) == spec_flags
    assert settings(bench.agent_argv) == expected(5000)

    begin = Recorder(device)
    candidate = Candidate(Path("."), SHA, 10, wire={"model.onnx": 10})
    ops.ship(begin, candidate, Lease("r1"), measure=(group, BLOCKS, True))
    assert flags(begin.agent_argv) == spec_flags
    assert settings(begin.agent_argv) == expected(5000)

    searched = Recorder(device)
    monkeypatch.setattr(measure.ssh, "connect", lambda *a, **k: searched)
    options = target.options_of(SearchLatency(blocks=BLOCKS, **TIMING))
    measure.measure_on_device(device, Path("."), b"ref", [b"cand"], np.zeros((1, 2)), options, codec="none")
    assert flags(searched.agent_argv) == spec_flags
    assert settings(searched.agent_argv) == expected(1)


@pytest.mark.parametrize("spec", [TimingSpec(), Group(), SearchLatency(), Timing(), measure.MeasureOptions()])
def test_agent_parses_exactly_what_the_spec_emits(spec):
    emitted = spec.agent_args(3, ["CPUExecutionProvider", "XnnpackExecutionProvider"])
    parsed, unknown = agent._parser().parse_known_args(["bench", "m.onnx", "p.npy", *emitted])
    assert unknown == []
    assert agent._bench_settings(parsed) == {
        "providers": ["CPUExecutionProvider", "XnnpackExecutionProvider"],
        "threads": spec.threads,
        "warmup": spec.warmup,
        "min_runs": spec.min_runs,
        "min_seconds": spec.min_seconds,
        "blocks": 3,
        "max_samples": 5000,
    }


def test_sections_keep_their_keys_and_defaults():
    assert ValidationParams().latency.model_dump() == {
        "threads": 1, "warmup": 50, "min_runs": 300, "min_seconds": 1.0,
    }  # fmt: skip
    # in this order: compression_plan.json holds it
    assert list(SearchLatency().model_dump().items()) == [
        ("blocks", 6), ("threads", 1), ("warmup", 20), ("min_runs", 120), ("min_seconds", 0.6),
    ]  # fmt: skip
    assert Group().model_dump(exclude={"budgets", "providers"}) == {
        "threads": 1, "warmup": 50, "min_runs": 200, "min_seconds": 2.0,
    }  # fmt: skip
    assert Group(warmup=0).warmup == 0  # a group may skip the warm-up; the other sections may not
    with pytest.raises(ValueError):
        SearchLatency(blocks=1)
    assert Timing().per_block() == (100, 0.0)  # mixed precision: 7 rounds of 100 queries per model
