"""Typed, validated parameters for every pipeline.

Each ``conf/base/parameters_<pipeline>.yml`` top-level key has a model here. Unknown keys
are refused (``extra="forbid"``) so a typo never silently falls back to a default. The
``validate_parameters`` hook checks all of them once, before any node runs; nodes then
parse their own section with ``parse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from kedro_edge.bench.stats import pairs_of, smallest_p_value
from kedro_edge.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A ``torch.nn.Module`` class by import path, with constructor keyword arguments."""

    class_path: str = "kedro_edge.models.ResidualCNN"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataParams(_Strict):
    seed: int = 42
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    image_size: int | None = Field(32, ge=4, le=512)  # resize (bilinear); null keeps the size


class TrainParams(_Strict):
    seed: int = 0
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    patience: int = Field(5, ge=1)  # epochs without a better validation accuracy before stopping


class PruneParams(_Strict):
    enabled: bool = True
    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    ratio: float | None = Field(0.5, gt=0, lt=1)  # fraction of each layer's channels removed
    target_macs: float | None = Field(None, gt=0, lt=1)  # or: keep this fraction of the MACs
    steps: int = Field(3, ge=1)  # iterative schedule: prune a little, fine-tune, repeat
    finetune_epochs: int = Field(2, ge=0)
    lr: float = Field(1e-3, gt=0)
    global_pruning: bool = False
    round_to: int | None = Field(None, ge=1)  # keep channel counts multiples of this
    # per-layer ratios by module name (what the search chooses, NetAdapt-style); layers not
    # named here take ``ratio``
    layer_ratios: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> PruneParams:
        if self.method == "structured" and (self.ratio is None) == (self.target_macs is None):
            raise ValueError("set exactly one of 'ratio' and 'target_macs'")
        if self.method == "unstructured" and self.ratio is None:
            raise ValueError("unstructured pruning needs 'ratio'")
        return self


class LowRankParams(_Strict):
    """Truncated-SVD factorisation of Linear and k x k Conv layers (``compress.lowrank``)."""

    enabled: bool = False
    energy: float | None = Field(0.9, gt=0, le=1)  # keep the smallest rank holding this share of sigma^2
    target_macs: float | None = Field(None, gt=0, lt=1)  # or: ranks chosen to keep this share of MACs
    conv: Literal["channel", "spatial"] = "channel"  # k x k (r filters) + 1 x 1, or k x 1 (r) + 1 x k
    min_rank: int = Field(1, ge=1)
    finetune_epochs: int = Field(2, ge=0)
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> LowRankParams:
        if (self.energy is None) == (self.target_macs is None):
            raise ValueError("set exactly one of 'energy' and 'target_macs'")
        return self


class ClusterParams(_Strict):
    """Per-layer k-means weight sharing (``compress.cluster``): fewer distinct values, fewer bytes shipped."""

    enabled: bool = True
    k: int = Field(16, ge=2, le=256)  # shared values per layer
    min_weights: int = Field(256, ge=1)  # layers with fewer weights stay as they are
    finetune_epochs: int = Field(1, ge=0)  # centroids trained, assignments fixed: shared stays shared
    lr: float = Field(1e-4, gt=0)


class QuantizeParams(_Strict):
    enabled: bool = True
    calibration_samples: int = Field(256, ge=1)  # from the training split
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # uint8 activations (U8S8): ORT on x86-64 fuses every Conv into QLinearConv; with int8
    # (S8S8) it left Conv+ReLU as DQ->float Conv->Q here, 2.8x slower (ORT 1.32, AVX-512).
    activation_type: Literal["uint8", "int8"] = "uint8"
    # ONNX node names kept in float (mixed precision), or "auto": measured per layer on the
    # validation split (accuracy) and on this host (latency); see compress.mixed_precision
    exclude: list[str] | Literal["auto"] = Field(default_factory=list)
    auto_max_layer_drop: float = Field(0.5, ge=0)  # auto: points of validation accuracy one layer may cost


class DistillParams(_Strict):
    enabled: bool = True
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)  # weight of the soft-target term
    epochs: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    patience: int = Field(4, ge=1)
    student: ModelSpec | None = None  # a smaller architecture instead of the pruned teacher


class ExportParams(_Strict):
    opset: int = Field(17, ge=13, le=21)


class SearchBudget(_Strict):
    # validation points the candidate may lose against the FP32 teacher (its ONNX, same images)
    max_accuracy_drop: float = Field(1.0, ge=0)


class SearchSpace(_Strict):
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


class SearchLatency(_Strict):
    """How each candidate is timed on the target: interleaved with the reference (FP32 teacher)."""

    blocks: int = Field(6, ge=2)
    threads: int = Field(1, ge=1)
    warmup: int = Field(20, ge=1)
    min_runs: int = Field(120, ge=1)
    min_seconds: float = Field(0.6, ge=0)


class SearchParams(_Strict):
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


class CompressionParams(_Strict):
    search: SearchParams = SearchParams()
    lowrank: LowRankParams = LowRankParams()
    prune: PruneParams = PruneParams()
    quantize: QuantizeParams = QuantizeParams()
    distill: DistillParams = DistillParams()
    cluster: ClusterParams = ClusterParams()
    export: ExportParams = ExportParams()


class LatencyParams(_Strict):
    threads: int = Field(1, ge=1)
    warmup: int = Field(50, ge=1)
    min_runs: int = Field(300, ge=1)
    min_seconds: float = Field(1.0, ge=0)


class GateParams(_Strict):
    # points of test accuracy the final model may lose against the teacher (paired, same images)
    max_accuracy_drop: float | None = Field(1.0, ge=0)
    # the same on the perturbed copy of the test split (validation.robustness)
    max_robust_accuracy_drop: float | None = Field(2.0, ge=0)
    # upper_bound: the drop's paired upper confidence bound must be within the limit (the model
    # is shown to be no worse than that: a non-inferiority test); point: the point estimate only
    accuracy_decision: Literal["upper_bound", "point"] = "upper_bound"
    min_size_reduction: float | None = Field(4.0, ge=1)  # teacher.onnx bytes / model.onnx bytes
    min_agreement: float | None = Field(0.98, ge=0, le=1)  # torch vs ONNX top-1, final model


class RobustnessParams(_Strict):
    """The seeded perturbed copy of the test split (``kedro_edge.robustness``)."""

    enabled: bool = True
    perturbations: list[Literal["noise", "shift", "contrast"]] = Field(
        default_factory=lambda: ["shift", "noise"], min_length=1
    )
    noise_std: float = Field(0.1, ge=0)  # Gaussian noise, in input units (images: [0, 1])
    max_shift: int = Field(2, ge=0, le=16)  # pixels, each image shifted by up to this in x and y
    contrast: float = Field(0.5, ge=0, lt=1)  # contrast scaled by a factor in [1 - contrast, 1]
    seed: int = 0


class ValidationParams(_Strict):
    batch_size: int = Field(256, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of every accuracy interval
    bootstrap_resamples: int = Field(20000, ge=1000)  # paired bootstrap of accuracy differences
    latency: LatencyParams = LatencyParams()
    robustness: RobustnessParams = RobustnessParams()
    gates: GateParams = GateParams()
    # a later stage counts as slower than the one before it when its p50 is this much higher
    slower_tolerance: float = Field(0.05, ge=0)


class RegressionParams(_Strict):
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


class DeploymentParams(_Strict):
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


# top-level parameter key -> (model, the file it normally lives in)
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "data": (DataParams, "parameters_training.yml"),
    "model": (ModelSpec, "parameters_training.yml"),
    "training": (TrainParams, "parameters_training.yml"),
    "compression": (CompressionParams, "parameters_compression.yml"),
    "validation": (ValidationParams, "parameters_validation.yml"),
    "deployment": (DeploymentParams, "parameters_deployment.yml"),
}

M = TypeVar("M", bound=BaseModel)


class Sources(Protocol):
    """Where a parameter came from (``kedro_edge.param_sources.ParamSources``)."""

    def where(self, path: Sequence[str]) -> str | None: ...


def parse(model: type[M], raw: Any, key: str, sources: Sources | None = None) -> M:
    """Validate ``raw`` against ``model``; raise ``ConfigError`` naming the first bad key.

    ``sources`` names the file (or ``--params``) that set the bad key; without it the message
    names the conf/base file the section conventionally lives in.
    """
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, key, sources)) from None


def validate_parameters(params: dict[str, Any], sources: Sources | None = None) -> dict[str, BaseModel]:
    """Check every known top-level section of Kedro's merged parameters."""
    return {
        key: parse(model, params.get(key), key, sources)
        for key, (model, _) in SECTIONS.items()
        if key in params
    }


def _one_line(exc: ValidationError, key: str, sources: Sources | None = None) -> str:
    err = exc.errors()[0]
    path = [*key.split("."), *(str(p) for p in err["loc"])]
    where = sources.where(path) if sources is not None else None
    if where is None:
        where = f"conf/base/{SECTIONS.get(path[0], (None, 'parameters'))[1]}"
    dotted = ".".join(path)
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown parameter key '{dotted}'"
    got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
    return f"{where}: parameter '{dotted}': {err['msg']}{got}"
