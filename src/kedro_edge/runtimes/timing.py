"""How a model is timed: single-stream latency settings."""

from __future__ import annotations

from pydantic import Field

from kedro_edge.schema import Strict


class LatencyParams(Strict):
    threads: int = Field(1, ge=1)
    warmup: int = Field(50, ge=1)
    min_runs: int = Field(300, ge=1)
    min_seconds: float = Field(1.0, ge=0)
