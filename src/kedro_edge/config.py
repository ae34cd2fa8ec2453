"""Typed, validated parameters for every pipeline.

Each ``conf/base/parameters_<pipeline>.yml`` top-level key has a model here. Unknown keys
are refused (``extra="forbid"``) so a typo never silently falls back to a default. The
``validate_parameters`` hook checks all of them once, before any node runs; nodes then
parse their own section with ``parse``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

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

    @model_validator(mode="after")
    def _one_target(self) -> PruneParams:
        if self.method == "structured" and (self.ratio is None) == (self.target_macs is None):
            raise ValueError("set exactly one of 'ratio' and 'target_macs'")
        if self.method == "unstructured" and self.ratio is None:
            raise ValueError("unstructured pruning needs 'ratio'")
        return self


class QuantizeParams(_Strict):
    enabled: bool = True
    calibration_samples: int = Field(256, ge=1)  # from the training split
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # uint8 activations (U8S8): ORT on x86-64 fuses every Conv into QLinearConv; with int8
    # (S8S8) it left Conv+ReLU as DQ->float Conv->Q here, 2.8x slower (ORT 1.32, AVX-512).
    activation_type: Literal["uint8", "int8"] = "uint8"


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


class CompressionParams(_Strict):
    prune: PruneParams = PruneParams()
    quantize: QuantizeParams = QuantizeParams()
    distill: DistillParams = DistillParams()
    export: ExportParams = ExportParams()


class LatencyParams(_Strict):
    threads: int = Field(1, ge=1)
    warmup: int = Field(50, ge=1)
    min_runs: int = Field(300, ge=1)
    min_seconds: float = Field(1.0, ge=0)


class GateParams(_Strict):
    max_accuracy_drop: float | None = Field(1.0, ge=0)  # points, final model vs teacher
    min_size_reduction: float | None = Field(4.0, ge=1)  # teacher.onnx bytes / model.onnx bytes
    min_agreement: float | None = Field(0.98, ge=0, le=1)  # torch vs ONNX top-1, final model


class ValidationParams(_Strict):
    batch_size: int = Field(256, ge=1)
    latency: LatencyParams = LatencyParams()
    gates: GateParams = GateParams()


class RegressionParams(_Strict):
    enabled: bool = True  # candidate vs the active release, interleaved on each device
    alpha: float = Field(0.05, gt=0, lt=1)  # significance of the one-sided Mann-Whitney U test
    # and the slowdown must exceed this (0.05 = 5%). Not below 1%: both models' blocks share two
    # sessions in one process, so tiny per-session offsets are "significant" (measured: 8 of 20
    # A/A trials had p < 0.05, at +0.1-0.4%); the tolerance keeps them from blocking a release.
    tolerance: float = Field(0.05, ge=0.01)
    blocks: int = Field(10, ge=3)  # A B, B A, ... blocks, each min_runs/blocks queries


Wave = Annotated[int, Field(ge=1)] | Annotated[str, StringConstraints(pattern=r"^\d{1,3}(\.\d+)?%$")]


class DeploymentParams(_Strict):
    enabled: bool = True
    devices: list[str] | None = None  # names to deploy to; null: every device in devices.yml
    group: str | None = None  # or only this group
    max_parallel: int = Field(16, ge=1)  # devices installed at once
    max_parallel_benchmarks: int = Field(1, ge=1)  # devices measuring at once (shared hosts: 1)
    parity_samples: int = Field(32, ge=1)  # test images whose outputs device and host compare
    trust_new_host_keys: bool = False  # opt-in: accept and record keys not in known_hosts
    waves: list[Wave] = Field(default_factory=lambda: [1, "25%", "100%"], min_length=1)  # per group
    max_failure_percentage: float = Field(0.0, ge=0, le=100)  # of a wave, before the rollout aborts
    unreachable_is_failure: bool = True
    lock_timeout: float = Field(60.0, gt=0)  # wait this long for another rollout's device lease
    regression: RegressionParams = RegressionParams()


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


def parse(model: type[M], raw: Any, key: str) -> M:
    """Validate ``raw`` against ``model``; raise ``ConfigError`` naming the first bad key."""
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, key)) from None


def validate_parameters(params: dict[str, Any]) -> dict[str, BaseModel]:
    """Check every known top-level section of Kedro's merged parameters."""
    return {key: parse(model, params.get(key), key) for key, (model, _) in SECTIONS.items() if key in params}


def _one_line(exc: ValidationError, key: str) -> str:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in (key, *err["loc"]))
    where = SECTIONS.get(key, (None, "parameters"))[1]
    if err["type"] == "extra_forbidden":
        return f"conf/base/{where}: unknown parameter key '{path}'"
    got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
    return f"conf/base/{where}: parameter '{path}': {err['msg']}{got}"
