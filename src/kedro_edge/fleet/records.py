"""The typed records of a release: decisions and verdicts as enums, and the JSON a rollout writes.

Every record is validated on the way in (``from_json``: a decision outside ``Decision`` is
refused) and written by one method, ``to_json``, with exactly the keys it was given or set: a
step that learnt nothing about a field leaves it out, as the plain dicts these replace did. So
release.json, device_benchmarks.json and what the tasks of a sharded release pass each other
keep their shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict


class _Value(str, Enum):
    """A string enum that prints as its value (``enum.StrEnum``, which needs Python 3.11)."""

    __str__ = str.__str__
    __format__ = str.__format__


class Decision(_Value):
    """What a rollout did with one device."""

    PASSED = "passed"  # every gate passed; not active yet
    ACTIVATED = "activated"
    ALREADY_ACTIVE = "already active"  # an earlier, interrupted run of the release activated it
    REFUSED = "refused"  # a gate failed
    FAILED = "failed"  # a step on the device failed
    NOT_ACTIVATED = "not activated"  # passed, but its wave was aborted
    ROLLED_BACK = "rolled back"
    ROLLBACK_FAILED = "rollback failed"
    NOT_REACHED = "not reached"  # the rollout stopped before its wave
    NOT_IN_ANY_WAVE = "not in any wave"


ON_CANDIDATE = (Decision.ACTIVATED, Decision.ALREADY_ACTIVE)
UNDONE = (Decision.ROLLED_BACK, Decision.ROLLBACK_FAILED)  # an aborted release's activations
WENT_WRONG = (Decision.REFUSED, Decision.FAILED, Decision.ROLLBACK_FAILED)


class Verdict(_Value):
    """A release's verdict (``kedro_edge.fleet.rollout.verdict``)."""

    RELEASED = "released"  # every targeted device ends on the candidate
    PARTIAL = "partial"  # some do
    BLOCKED = "blocked"  # none does
    ROLLED_BACK = "rolled_back"  # an aborted rollout undid its activations
    SKIPPED = "skipped"  # deployment is switched off


class WaveOutcome(_Value):
    PASSED = "passed"
    ABORTED = "aborted"  # more failures than ``max_failure_percentage``: no later wave starts


class Status(_Value):
    """A step's outcome on one device (``kedro_edge.fleet.pool``), a benchmark row's status."""

    OK = "ok"
    FAILED = "failed"


Number = int | float  # an int stays an int in the JSON, a float a float
R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """A JSON object with known keys; unset fields are left out of ``to_json``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_json(self) -> dict[str, Any]:
        # Not model_dump: it would copy every figure and sample list a measurement holds.
        fields = type(self).model_fields
        return {name: _json(getattr(self, name)) for name in fields if name in self.model_fields_set}

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        return cls.model_validate(data)

    def update(self, **fields: Any) -> None:
        """Set several fields (each validated)."""
        for name, value in fields.items():
            setattr(self, name, value)


def _json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list) and value and isinstance(value[0], Record):
        return [v.to_json() for v in value]
    return value


COSTS = ("ssh_connections", "remote_commands", "bytes_sent")


class DeviceEntry(Record):
    """One device in a rollout: its wave, what was done and why, what reaching it cost.

    A task of a sharded release knows only what it did: one that rolled a device back knows no
    wave, one that gave a lease back may know no group.
    """

    device: str
    group: str | None = None
    wave: int | None = None
    decision: Decision | None = None  # None: its wave is under way
    workdir: str | None = None
    before: str | None = None  # the version active on the device when the rollout found it
    install: str | None = None  # "present" (nothing moved) | "installed"
    measurement: dict[str, Any] | None = None  # the agent's benchmark, with parity
    gates: list[dict[str, Any]] | None = None
    reason: str | None = None
    error: str | None = None
    failure: str | None = None  # a failure's kind: unreachable | security | device
    record_error: str | None = None  # recording a refusal on the device failed
    active_after: str | None = None  # after a rollback
    lease_error: str | None = None  # giving the lease back failed (it lapses)
    ssh_connections: int | None = None
    remote_commands: int | None = None
    bytes_sent: int | None = None

    def absorb(self, later: DeviceEntry) -> None:
        """Take a later task's news of this device; what reaching it cost adds up. A later task
        that did not reach the device does not undo an earlier decision."""
        for name in later.model_fields_set:
            value = getattr(later, name)
            if name in COSTS and name in self.model_fields_set:
                value += getattr(self, name)
            elif name == "decision" and value == Decision.NOT_REACHED and self.decision:
                continue
            setattr(self, name, value)


class WaveRecord(Record):
    """One wave: its devices, those that count as failed, and whether it passed."""

    wave: int
    devices: list[str]
    failed: list[str]
    failure_percentage: float
    outcome: WaveOutcome | None = None
    batches: int | None = None  # a sharded release's tasks per phase of the wave


class RolloutOutcome(Record):
    """What a rollout did (``staged_rollout``, or a sharded release's tasks merged)."""

    verdict: Verdict
    rollout_id: str
    shipping: dict[str, Any]
    waves: list[WaveRecord]
    controller: dict[str, int]
    devices: list[DeviceEntry]
    resumed: bool | None = None  # staged_rollout only: an interrupted rollout of it was resumed


class DeviceRelease(Record):
    """A device's row in release.json: its decision, the gates and the figures behind it."""

    device: str
    group: str | None
    wave: int | None
    decision: Decision
    reason: str | None
    failure: str | None = None
    previous_sha256: str | None
    active_after: str | None
    gates: list[dict[str, Any]]
    figures: dict[str, Any]
    bytes_sent: int | None = None


class ReleaseRecord(Record):
    """release.json: the verdict, the candidate, the policy, every wave and every decision."""

    verdict: Verdict
    rollout_id: str | None = None
    resumed: bool | None = None
    candidate: dict[str, Any]  # the model file's version: path, sha256, DVC md5, git revision
    shipping: dict[str, Any] | None = None
    previous_sha256: str | list[str] | None = None  # None: the first release
    created_utc: str
    policy: dict[str, Any] | None = None
    waves: list[WaveRecord]
    devices: list[DeviceRelease]


class DeviceBenchmark(Record):
    """A device's row in device_benchmarks.json: latency figures, parity and the device's facts."""

    device: str
    group: str | None
    status: Status
    error: str | None
    model_sha256: str
    runs: Number | None = None
    p50_ms: Number | None = None
    p90_ms: Number | None = None
    p99_ms: Number | None = None
    mean_ms: Number | None = None
    std_ms: Number | None = None
    min_ms: Number | None = None
    max_ms: Number | None = None
    load_ms: Number | None = None
    peak_rss_mb: Number | None = None
    parity: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None
    samples_ms: list[Number] | None = None
    providers: list[str] | None = None
    baseline: dict[str, Any] | None = None  # the active release, measured interleaved
    ssh_connections: int | None = None
    remote_commands: int | None = None
    bytes_sent: int | None = None


class BenchmarkReport(Record):
    """device_benchmarks.json: the model, one row per device, how many were measured."""

    model: dict[str, Any]
    devices: list[DeviceBenchmark]
    summary: dict[str, int]
