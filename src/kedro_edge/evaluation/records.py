"""Typed records of the validation figures, and the one place each becomes JSON.

``compression_metrics.json``, ``compression_stages.json`` and ``validated_model.json`` are
written from these types: nodes build them, the gates, warnings, table and plots read their
attributes, and each record's ``to_json`` fixes its keys and their order. ``from_json`` is
strict: a missing or unknown key is a ``RecordError`` naming it, so a file of another shape
fails where it is read rather than as a ``KeyError`` deep in a plot, and reading a record and
writing it back gives the same JSON.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from pydantic import ValidationError

from kedro_edge.errors import RecordError
from kedro_edge.evaluation.gates import GateResult
from kedro_edge.evaluation.robustness import RobustnessParams
from kedro_edge.evaluation.statistics import PairedComparison

_OPTIONAL = "optional"  # field metadata: the key is left out of the JSON (not null) when unset


def _optional() -> Any:
    return field(default=None, metadata={_OPTIONAL: True})


def _kwargs(data: Any, cls: type, where: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``; a RecordError names a missing,
    unknown or null-instead-of-absent key."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for f in fields(cls):
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING:
            raise RecordError(f"{where}: missing key '{f.name}'")
        if f.metadata.get(_OPTIONAL) and f.name in data and data[f.name] is None:
            raise RecordError(f"{where}: key '{f.name}' is null (an unset figure is left out)")
    unknown = [key for key in data if key not in names]
    if unknown:
        raise RecordError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(names)})")
    return dict(data)


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise RecordError(f"{where}: expected a JSON array, got {type(data).__name__}")
    return data


def _encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "model_dump"):  # a parameter model (robustness)
        return value.model_dump()
    if is_dataclass(value):  # PairedComparison, GateResult
        return asdict(value)
    return value


def _to_json(record: Any) -> dict[str, Any]:
    """A record's fields in declaration order (the file's key order), unset optional ones left out."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if not (value is None and f.metadata.get(_OPTIONAL)):
            out[f.name] = _encode(value)
    return out


def _paired(data: Any, where: str) -> PairedComparison:
    return PairedComparison(**_kwargs(data, PairedComparison, where))


@dataclass(frozen=True)
class Agreement:
    """Torch module vs its ONNX export on the test images: same top-1 share, largest logit gap."""

    top1_agreement: float
    max_abs_diff: float

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "torch_vs_onnx") -> Agreement:
        return cls(**_kwargs(data, cls, where))


@dataclass(frozen=True, kw_only=True)
class StageComparison:
    """A stage against another on the same test images: clean, and robust when robustness is on.

    ``stage`` names the other stage in ``vs_previous``; ``vs_teacher`` needs no name.
    """

    stage: str | None = _optional()
    clean: PairedComparison
    robust: PairedComparison | None = _optional()

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "comparison") -> StageComparison:
        kw = _kwargs(data, cls, where)
        kw["clean"] = _paired(kw["clean"], f"{where}.clean")
        if "robust" in kw:
            kw["robust"] = _paired(kw["robust"], f"{where}.robust")
        return cls(**kw)


@dataclass(frozen=True, kw_only=True)
class StageFigures:
    """One stage's figures through ONNX Runtime (``kedro_edge.evaluation.stage``).

    Robust accuracy is there only with robustness on; ``vs_teacher`` and ``vs_previous`` on
    every stage after the first; ``shipped_bytes`` (lzma, as a release sends it) on current files.
    """

    accuracy: float
    accuracy_ci: tuple[float, float]
    n: int
    robust_accuracy: float | None = _optional()
    robust_accuracy_ci: tuple[float, float] | None = _optional()
    size_bytes: int
    shipped_bytes: int | None = _optional()
    params: int
    macs: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_runs: int
    torch_vs_onnx: Agreement
    vs_teacher: StageComparison | None = _optional()
    vs_previous: StageComparison | None = _optional()

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "stage figures") -> StageFigures:
        kw = _kwargs(data, cls, where)
        for key in ("accuracy_ci", "robust_accuracy_ci"):
            if key in kw:
                kw[key] = tuple(_list(kw[key], f"{where}.{key}"))
        kw["torch_vs_onnx"] = Agreement.from_json(kw["torch_vs_onnx"], f"{where}.torch_vs_onnx")
        for key in ("vs_teacher", "vs_previous"):
            if key in kw:
                kw[key] = StageComparison.from_json(kw[key], f"{where}.{key}")
        return cls(**kw)


class FindingKind(str, Enum):
    """How a stage made things worse than the stage before it."""

    SLOWER = "slower"
    LARGER = "larger"
    LESS_ACCURATE = "less accurate"
    LESS_ROBUST = "less robust"


@dataclass(frozen=True)
class Finding:
    """A warning: ``stage`` is ``kind`` than ``previous`` by ``value`` (a ratio, or points)."""

    stage: str
    previous: str
    kind: FindingKind
    value: float
    message: str

    @classmethod
    def of(cls, stage: str, previous: str, kind: FindingKind, value: float, detail: str) -> Finding:
        """The finding with its one-line message, e.g. "stage 'int8' is slower than 'pruned': ..."."""
        return cls(
            stage, previous, kind, value, f"stage '{stage}' is {kind.value} than '{previous}': {detail}"
        )

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "warning") -> Finding:
        kw = _kwargs(data, cls, where)
        try:
            kw["kind"] = FindingKind(kw["kind"])
        except ValueError:
            known = ", ".join(repr(k.value) for k in FindingKind)
            raise RecordError(f"{where}.kind: {kw['kind']!r} is not one of {known}") from None
        return cls(**kw)


@dataclass(frozen=True)
class MetricInfo:
    """Which metric the figures are (``validation.metric``): ``accuracy`` fields hold its mean."""

    name: str
    higher_is_better: bool
    unit: str  # of paired differences: "points" for shares, else the metric's own
    scale: float  # reported figure = mean x scale (100: percent)

    @classmethod
    def named(cls, name: str, scale: float = 100.0, higher_is_better: bool = True) -> MetricInfo:
        """The one rule for units: a share (scale 100) differs in percentage points, any other
        metric in its own units."""
        return cls(name, higher_is_better, "points" if scale == 100 else name, scale)

    @property
    def what(self) -> str:
        """What tables and axes call the figure: 'accuracy' for top-1, else the metric's name."""
        return "accuracy" if self.name == "top1" else self.name

    @property
    def percent(self) -> bool:
        """Figures are shown as percentages."""
        return self.scale == 100

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


TOP1 = MetricInfo.named("top1")  # what files from before ``validation.metric`` hold


@dataclass(frozen=True, kw_only=True)
class CompressionMetrics:
    """``compression_metrics.json``: every stage's figures, the warnings and the gate results."""

    final_stage: str
    test_n: int
    confidence: float
    robustness: RobustnessParams | None  # null when robustness is off
    stages: dict[str, StageFigures]  # in table order: the reference stage first
    latency_threads: int
    warnings: list[Finding]
    gates: list[GateResult]
    passed: bool
    metric: MetricInfo | None = _optional()  # None: top-1 accuracy (files from before metrics)

    @property
    def final(self) -> StageFigures:
        return self.stages[self.final_stage]

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "compression_metrics") -> CompressionMetrics:
        kw = _kwargs(data, cls, where)
        if kw["robustness"] is not None:
            try:
                kw["robustness"] = RobustnessParams.model_validate(kw["robustness"])
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(part) for part in first["loc"])
                raise RecordError(f"{where}.robustness.{key}: {first['msg']}") from err
        stages = kw["stages"]
        if not isinstance(stages, dict):
            raise RecordError(f"{where}.stages: expected a JSON object, got {type(stages).__name__}")
        kw["stages"] = {
            name: StageFigures.from_json(f, f"{where}.stages.{name}") for name, f in stages.items()
        }
        if kw["final_stage"] not in kw["stages"]:
            raise RecordError(f"{where}.final_stage: no stage {kw['final_stage']!r} in stages")
        kw["warnings"] = [
            Finding.from_json(w, f"{where}.warnings[{i}]")
            for i, w in enumerate(_list(kw["warnings"], f"{where}.warnings"))
        ]
        if "metric" in kw:
            kw["metric"] = MetricInfo(**_kwargs(kw["metric"], MetricInfo, f"{where}.metric"))
        kw["gates"] = [
            GateResult(**_kwargs(g, GateResult, f"{where}.gates[{i}]"))
            for i, g in enumerate(_list(kw["gates"], f"{where}.gates"))
        ]
        return cls(**kw)
