"""``kedro edge check``: what each compression stage would do to the configured model, in seconds.

Every registered technique runs once, as configured but with its epochs at their minimum, on a
small slice of the data, then the INT8 export: a stage that cannot take the architecture says
so in one line (and what to set) instead of stopping a long run halfway. The teacher is the
configured one (loaded if given; built untrained otherwise): nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kedro_edge import config, data
from kedro_edge.compress import ptq, quantize, registry
from kedro_edge.errors import KedroEdgeError, first_line
from kedro_edge.models import build_model
from kedro_edge.models.footprint import footprint
from kedro_edge.nodes.training import given_teacher
from kedro_edge.runtimes import graph_teacher, onnx_export
from kedro_edge.search.space import without_search

SLICE = 64  # samples per split the check trains and calibrates on
_QUICK = {"finetune_epochs": 0, "epochs": 1, "steps": 1}  # each at its smallest allowed value


@dataclass(frozen=True)
class StageCheck:
    """One row of the check: the stage, whether it applies, what it does or why not, its footprint."""

    stage: str
    applies: bool
    detail: str
    params: int | None = None
    macs: int | None = None


def check_stages(
    model_input: dict[str, np.ndarray], model: dict, training: dict, compression: dict
) -> list[StageCheck]:
    """The teacher's row, one per registered technique in recipe order, and the INT8 export's."""
    spec = config.parse(config.TeacherSpec, model, "model")
    train = config.parse(config.TrainParams, training, "training")
    recipe = without_search(config.parse(config.CompressionParams, compression, "compression"))
    splits = _slice(data.Splits(model_input))
    if spec.source is not None:
        teacher, source = given_teacher(spec, splits)
        origin = f"{source.kind.value} {source.path}"
    else:
        torch.manual_seed(train.seed)
        teacher, origin = (
            build_model(spec, splits.input_shape, splits.num_classes),
            f"{spec.class_path} (untrained)",
        )
    graph = graph_teacher.is_graph_only(teacher)
    rows = [StageCheck(registry.REFERENCE, True, origin, *_footprint(teacher, splits))]
    recipe, off = registry.for_graph_teacher(recipe, origin) if graph else (recipe, {})
    module = teacher
    for technique in registry.techniques():
        params = getattr(recipe, technique.name)
        if not params.enabled:
            why = (
                "the teacher is a graph: it rewrites a torch module"
                if technique.name in off
                else "switched off"
            )
            rows.append(StageCheck(technique.name, False, why))
            continue
        quick = params.model_copy(update={k: v for k, v in _QUICK.items() if k in type(params).model_fields})
        ctx = registry.Context(splits, train, recipe.model_copy(update={technique.name: quick}), teacher)
        try:
            module, report = technique.apply(copy.deepcopy(module), quick, ctx)
        except KedroEdgeError:
            raise  # the user's settings: the command stops with their one line
        except Exception as exc:  # noqa: BLE001 - the architecture this stage cannot take
            registry.stop_if_required(technique.name, params, _why(exc))  # as the run would
            rows.append(
                StageCheck(
                    technique.name,
                    False,
                    f"fails ({_why(exc)}); set compression.{technique.name}.enabled: false",
                )
            )
            continue
        passed_on = isinstance((report or {}).get("skipped"), str)  # the model went through as it was
        rows.append(StageCheck(technique.name, not passed_on, _summary(report), *_footprint(module, splits)))
    rows.append(_export(module, splits, recipe))
    return rows


def _export(module: nn.Module, splits: data.Splits, recipe: Any) -> StageCheck:
    """The INT8 ONNX export of what the techniques made, calibrated on the slice."""
    try:
        if graph_teacher.is_graph_only(module):
            fp32 = module.proto
        else:
            fp32 = onnx_export.to_onnx(quantize.float_module(module), splits.input_shape, recipe.export.opset)
        if not recipe.quantize.enabled:
            return StageCheck("export", True, "FP32 ONNX (quantize switched off)")
        int8 = ptq.quantize_int8(fp32, data.calibration_samples(splits, SLICE), recipe.quantize)
    except KedroEdgeError:
        raise
    except Exception as exc:  # noqa: BLE001
        return StageCheck(
            "export",
            False,
            f"fails ({_why(exc)}); set compression.quantize.exclude or .enabled: false",
        )
    quantized = sum(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    return StageCheck(
        "export", True, f"INT8 ONNX: {quantized} QuantizeLinear nodes, {len(int8.SerializeToString())} bytes"
    )


def _summary(report: dict | None) -> str:
    if not report:
        return "applies"
    if isinstance(report.get("skipped"), str):
        return f"skipped: {report['skipped']}"
    parts = []
    if isinstance(report.get("skipped"), list) and report["skipped"]:
        parts.append(f"{len(report['skipped'])} layers left as they are")
    if "channel_ratio" in report:
        parts.append(f"{report['channel_ratio']:.0%} of each layer's channels")
    if report.get("heads"):
        parts.append(f"heads left {sorted(set(report['heads'].values()))}")
    if report.get("layers"):
        parts.append(f"{len(report['layers'])} layers")
    left = report.get("left_alone") or []
    if left:
        parts.append(
            f"left alone: {', '.join(item['layer'] for item in left[:4])}{' ...' if len(left) > 4 else ''}"
        )
    return "; ".join(parts) or "applies"


def _footprint(module: nn.Module, splits: data.Splits) -> tuple[int, int]:
    example = splits.example()
    if graph_teacher.is_graph_only(module):
        fp = module.footprint(example)
    else:
        fp = footprint(quantize.float_module(copy.deepcopy(module)), example)
    return fp.params, fp.macs


def _slice(splits: data.Splits) -> data.Splits:
    """About ``SLICE`` samples of each split, every class present (so the class count holds)."""
    per_class = max(1, -(-SLICE // splits.num_classes))
    picks = {}
    for split in data.SPLITS:
        y = splits.y(split)
        picks[split] = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))
    return splits.subset(picks)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, 160)}"
