"""How a model is timed, wherever it runs: one specification, one way to hand it to the agent.

Single stream (batch 1, one query at a time) with ``threads`` intra-op threads, after ``warmup``
queries, until both ``min_runs`` queries and ``min_seconds`` are reached (MLPerf's rule). The
parameter sections that time models extend ``TimingSpec`` with their own defaults:
``validation.latency``, ``compression.search.latency``, a devices.yml group, the search's
``kedro_edge.fleet.measure.MeasureOptions`` and mixed precision's ``Timing``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from kedro_edge.schema import Strict

CPU = ("CPUExecutionProvider",)


class TimingSpec(Strict):
    """Single-stream latency settings (the defaults are ``validation.latency``'s)."""

    threads: int = Field(1, ge=1)
    warmup: int = Field(50, ge=1)
    min_runs: int = Field(300, ge=1)
    min_seconds: float = Field(1.0, ge=0)

    def agent_args(self, blocks: int, providers: Sequence[str] = CPU) -> list[str]:
        """The flags of the agent's ``bench``, ``begin --measure`` and ``measure``: the only place
        the host writes them, so a device is timed as the parameters say wherever the command
        is built."""
        return [
            "--providers", ",".join(providers), "--threads", str(self.threads),
            "--warmup", str(self.warmup), "--min-runs", str(self.min_runs),
            "--min-seconds", repr(float(self.min_seconds)), "--blocks", str(blocks),
        ]  # fmt: skip


class _Blocks(Strict):
    blocks: int = Field(6, ge=1)


# _Blocks after TimingSpec in the bases puts ``blocks`` first in a dump, where it always was
# (compression_plan.json holds the search's latency section: its bytes stay the same)
class InterleavedTiming(TimingSpec, _Blocks):
    """Timing against a reference in ``blocks`` rounds with fresh sessions (A B / B A on a device),
    each model at least ``min_runs / blocks`` queries and ``min_seconds / blocks`` per round, so
    drift and heat hit both sides. The defaults are the search's."""

    warmup: int = Field(20, ge=1)
    min_runs: int = Field(120, ge=1)
    min_seconds: float = Field(0.6, ge=0)

    def per_block(self) -> tuple[int, float]:
        """``(min_runs, min_seconds)`` of one block, as the agent splits them."""
        return -(-self.min_runs // self.blocks), self.min_seconds / self.blocks
