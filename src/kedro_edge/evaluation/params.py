"""Parameters of the validation pipeline: batch size, intervals, latency, robustness, gates."""

from __future__ import annotations

import functools

from pydantic import Field, model_validator

from kedro_edge.evaluation import metrics
from kedro_edge.evaluation.gates import ACCURACY_GATES, GateParams
from kedro_edge.evaluation.robustness import RobustnessParams
from kedro_edge.runtimes.timing import TimingSpec
from kedro_edge.schema import Strict


class ValidationParams(Strict):
    batch_size: int = Field(256, ge=1)
    # the task's metric (kedro_edge.evaluation.metrics): a built-in name, or {name: import path, ...}
    metric: metrics.MetricParams | str = "top1"
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of every interval
    bootstrap_resamples: int = Field(20000, ge=1000)  # paired bootstrap of accuracy differences
    latency: TimingSpec = TimingSpec()
    robustness: RobustnessParams = RobustnessParams()
    gates: GateParams = GateParams()
    # a later stage counts as slower than the one before it when its p50 is this much higher
    slower_tolerance: float = Field(0.05, ge=0)

    @functools.cached_property
    def scorer(self) -> metrics.Metric:
        """The ``Metric`` that ``metric`` names, resolved (imported) once per parameters object."""
        return metrics.resolve(self.metric)

    @model_validator(mode="after")
    def _accuracy_gates_need_top1(self) -> ValidationParams:
        """The accuracy-named gates judge top-1; set with another metric they would be misread."""
        name = self.scorer.name
        if name != "top1":
            for gate in ACCURACY_GATES:
                if gate in self.gates.model_fields_set and getattr(self.gates, gate) is not None:
                    metric_gate = gate.replace("accuracy", "metric")
                    raise ValueError(
                        f"parameter 'validation.gates.{gate}' judges top-1 accuracy but validation.metric "
                        f"is '{name}': use 'validation.gates.{metric_gate}' (in the metric's units)"
                    )
        return self
