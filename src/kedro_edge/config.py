"""Typed, validated parameters for every pipeline: one model per top-level key.

Each layer owns the models of its parameters (``compression.prune`` lives beside the pruning
code); this module gathers them per ``conf/base/parameters_<pipeline>.yml`` section. The
``validate_parameters`` hook checks all of them once, before any node runs; nodes then parse
their own section with ``parse``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kedro_edge.compress.cluster import ClusterParams
from kedro_edge.compress.distill import DistillParams
from kedro_edge.compress.lowrank import LowRankParams
from kedro_edge.compress.prune import PruneParams
from kedro_edge.compress.quantize import QuantizeParams
from kedro_edge.data.splits import DataParams
from kedro_edge.evaluation.gates import GateParams
from kedro_edge.evaluation.params import ValidationParams
from kedro_edge.evaluation.robustness import RobustnessParams
from kedro_edge.fleet.params import DeploymentParams, RegressionParams, Wave
from kedro_edge.models.factory import ModelSpec
from kedro_edge.models.sources import TeacherSpec
from kedro_edge.models.training import TrainParams
from kedro_edge.runtimes.onnx_export import ExportParams
from kedro_edge.runtimes.timing import TimingSpec
from kedro_edge.schema import SECTION_FILES, Sources, Strict, parse
from kedro_edge.search.params import CompressionParams, SearchBudget, SearchLatency, SearchParams, SearchSpace

__all__ = [
    "ClusterParams",
    "CompressionParams",
    "DataParams",
    "DeploymentParams",
    "DistillParams",
    "ExportParams",
    "GateParams",
    "LowRankParams",
    "ModelSpec",
    "PruneParams",
    "QuantizeParams",
    "RegressionParams",
    "RobustnessParams",
    "SearchBudget",
    "SearchLatency",
    "SearchParams",
    "SearchSpace",
    "TimingSpec",
    "TrainParams",
    "ValidationParams",
    "Wave",
    "TeacherSpec",
    "SECTIONS",
    "Sources",
    "Strict",
    "parse",
    "validate_parameters",
]

_MODELS: dict[str, type[BaseModel]] = {
    "data": DataParams,
    "model": TeacherSpec,
    "training": TrainParams,
    "compression": CompressionParams,
    "validation": ValidationParams,
    "deployment": DeploymentParams,
}
# top-level parameter key -> (model, the file it normally lives in)
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {k: (m, SECTION_FILES[k]) for k, m in _MODELS.items()}


def validate_parameters(params: dict[str, Any], sources: Sources | None = None) -> dict[str, BaseModel]:
    """Check every known top-level section of Kedro's merged parameters."""
    return {
        key: parse(model, params.get(key), key, sources)
        for key, (model, _) in SECTIONS.items()
        if key in params
    }
