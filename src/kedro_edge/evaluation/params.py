"""Parameters of the validation pipeline: batch size, intervals, latency, robustness, gates."""

from __future__ import annotations

from pydantic import Field

from kedro_edge.evaluation.gates import GateParams
from kedro_edge.evaluation.robustness import RobustnessParams
from kedro_edge.runtimes.timing import TimingSpec
from kedro_edge.schema import Strict


class ValidationParams(Strict):
    batch_size: int = Field(256, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of every accuracy interval
    bootstrap_resamples: int = Field(20000, ge=1000)  # paired bootstrap of accuracy differences
    latency: TimingSpec = TimingSpec()
    robustness: RobustnessParams = RobustnessParams()
    gates: GateParams = GateParams()
    # a later stage counts as slower than the one before it when its p50 is this much higher
    slower_tolerance: float = Field(0.05, ge=0)
