"""Parameters of a release to the fleet: which devices, waves, limits, codec, the regression gate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from kedro_edge.evaluation.regression import pairs_of, smallest_p_value
from kedro_edge.schema import Strict


class RegressionParams(Strict):
    enabled: bool = True  # candidate vs the active release, interleaved on each device
    alpha: float = Field(0.05, gt=0, lt=1)  # of the one-sided Wilcoxon signed-rank test on pairs
    # and the slowdown must exceed this (0.05 = 5%). Not below 1%: a session's memory layout
    # shifts its latency by ~0.1-0.4% for its life; the agent opens fresh sessions per pair
    # (A/A false positives with no tolerance: 0 of 30, benchmarks/regression_detection.py), and
    # the tolerance keeps what is left from blocking a release.
    tolerance: float = Field(0.05, ge=0.01)
    blocks: int = Field(10, ge=3)  # A B, B A, ... pairs of blocks, each min_runs/blocks queries

    @model_validator(mode="after")
    def _can_call_a_regression(self) -> RegressionParams:
        # The exact test's p cannot go below 1/2^pairs: with alpha at or under that, the gate
        # would pass every candidate however slow (blocks 3: 0.125; 4: 0.0625; 5: 0.031).
        smallest = smallest_p_value(pairs_of(self.blocks))
        if self.enabled and smallest >= self.alpha:
            raise PydanticCustomError(
                "regression_cannot_fire",
                "blocks {blocks} with alpha {alpha} can never call a regression (smallest achievable "
                "one-sided p = {p} >= alpha); use more blocks or a larger alpha",
                {"blocks": self.blocks, "alpha": f"{self.alpha:g}", "p": f"{smallest:.3g}"},
            )
        return self


Wave = Annotated[int, Field(ge=1)] | Annotated[str, StringConstraints(pattern=r"^\d{1,3}(\.\d+)?%$")]


class DeploymentParams(Strict):
    enabled: bool = True
    devices: list[str] | None = None  # names to deploy to; null: every device in devices.yml
    group: str | None = None  # or only this group
    max_parallel: int = Field(64, ge=1)  # devices installed at once (benchmarks/fleet_scale.py)
    max_parallel_benchmarks: int = Field(1, ge=1)  # devices measuring at once (shared hosts: 1)
    # SSH connections a rollout keeps open between steps; beyond it the least recently used close
    max_open_connections: int = Field(256, ge=1)
    # devices per task when a release is sharded over controllers (kedro_edge.fleet.shard)
    shard_size: int = Field(1000, ge=1, le=1000)
    parity_samples: int = Field(32, ge=1)  # test images whose outputs device and host compare
    trust_new_host_keys: bool = False  # opt-in: accept and record keys not in known_hosts
    waves: list[Wave] = Field(default_factory=lambda: [1, "25%", "100%"], min_length=1)  # per group
    max_failure_percentage: float = Field(0.0, ge=0, le=100)  # of a wave, before the rollout aborts
    unreachable_is_failure: bool = True
    lock_timeout: float = Field(60.0, gt=0)  # wait this long for another rollout's device lease
    # a device's lease lapses this long after the controller stops renewing it (it renews every third)
    lease_ttl: float = Field(600.0, ge=10)
    keep_versions: int = Field(3, ge=1)  # standing releases kept on a device (current included)
    disk_reserve_mb: float = Field(1.0, ge=0)  # free space an upload must leave on the device
    codec: Literal["lzma", "zlib", "none"] = "lzma"  # the model on the wire (stdlib on the device)
    regression: RegressionParams = RegressionParams()

    @model_validator(mode="after")
    def _connections_hold_a_step(self) -> DeploymentParams:
        if self.max_open_connections < self.max_parallel:
            raise PydanticCustomError(
                "too_few_connections",
                "max_open_connections ({n}) must be at least max_parallel ({p}): every device a step "
                "works on at once needs its connection",
                {"n": self.max_open_connections, "p": self.max_parallel},
            )
        return self
