"""Parameters of the budgeted search, and the compression parameters the search and the plan carry."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo

from kedro_edge.compress import registry
from kedro_edge.runtimes.onnx_export import ExportParams
from kedro_edge.runtimes.timing import InterleavedTiming
from kedro_edge.schema import Strict


class SearchBudget(Strict):
    # validation points the candidate may lose against the FP32 teacher (its ONNX, same images)
    max_accuracy_drop: float = Field(1.0, ge=0)
    # the same in validation.metric's units; needed when the metric is not top1 (then it is the budget)
    max_metric_drop: float | None = Field(None, ge=0)

    @property
    def limit(self) -> float:
        """The budget the search judges: ``max_metric_drop`` when set, else ``max_accuracy_drop``."""
        return self.max_accuracy_drop if self.max_metric_drop is None else self.max_metric_drop


class SearchSpace(Strict):
    """What the search may change; a technique left out (null) keeps the recipe's setting."""

    keep: tuple[float, float] | None = (0.2, 1.0)  # per-stage share of channels kept (NetAdapt-style)
    width: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        default_factory=lambda: [0.5, 0.75, 1.0]
    )  # uniform width multiplier, times the stage's keep
    lowrank_energy: tuple[float, float] | None = None  # e.g. [0.8, 0.99]; null: no low-rank trials
    # e.g. [0, 16] (0: none); null: the recipe's clustering, after the search (bytes, not latency)
    cluster_k: list[Annotated[int, Field(ge=0, le=256)]] | None = None
    exclude_ends: bool = True  # try keeping the first and/or last weighted layer in float

    @model_validator(mode="after")
    def _ranges(self) -> SearchSpace:
        for name in ("keep", "lowrank_energy"):
            bounds = getattr(self, name)
            if bounds is not None and not 0 < bounds[0] <= bounds[1] <= 1:
                raise ValueError(f"'{name}' must be [low, high] with 0 < low <= high <= 1")
        return self


class SearchLatency(InterleavedTiming):
    """How each candidate is timed on the target: interleaved with the reference (FP32 teacher)."""

    blocks: int = Field(6, ge=2)


class SearchParams(Strict):
    """The budgeted search (``kedro_edge.search``): the fastest model on ``target`` within budget."""

    enabled: bool = False
    budget: SearchBudget = SearchBudget()
    target: str = "host"  # host, or a group of devices.yml (its first device times the candidates)
    trials: int | None = Field(24, ge=1)  # trials the study should hold (a rerun extends to this)
    time_budget_s: float | None = Field(1800, gt=0)  # this run stops asking for trials after this
    seed: int = 0
    # an Optuna storage URL (an RDB when workers are on several machines), or journal:<file>
    storage: str = "sqlite:///data/07_model_output/search.db"
    study: str | None = None  # study name; null: derived from everything that changes a trial
    batch: int = Field(4, ge=1)  # candidates built, then measured together over one connection
    finetune_epochs: int = Field(2, ge=1)  # per trial, after pruning (the chosen recipe gets the full one)
    hopeless_margin: float = Field(5.0, ge=0)  # after 1 epoch, a drop over budget + this ends the trial
    space: SearchSpace = SearchSpace()
    latency: SearchLatency = SearchLatency()

    @model_validator(mode="after")
    def _some_limit(self) -> SearchParams:
        if self.trials is None and self.time_budget_s is None:
            raise ValueError("set 'trials' or 'time_budget_s' (or both)")
        return self


class CompressionParams(Strict):
    """The ``compression:`` section: the search, then each registered technique's own section in
    recipe order (``compress.registry``: they are added by ``_follow_registry``), then export."""

    search: SearchParams = SearchParams()
    export: ExportParams = ExportParams()


def _follow_registry() -> None:
    """Give ``CompressionParams`` one field per registered technique, in recipe order."""
    fields = CompressionParams.__pydantic_fields__
    search, export = fields["search"], fields["export"]
    fields.clear()
    fields["search"] = search
    for technique in registry.techniques():
        fields[technique.name] = FieldInfo.from_annotated_attribute(technique.params, technique.params())
    fields["export"] = export
    CompressionParams.model_rebuild(force=True)


_follow_registry()
registry.on_change(_follow_registry)
