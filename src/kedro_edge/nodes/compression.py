"""Compression nodes: each registered technique in recipe order (``compress.registry``), then
teacher.onnx and model.onnx (INT8, with the layers mixed precision keeps in float)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import onnx
from torch import nn

from kedro_edge import config, data
from kedro_edge.compress import mixed_precision, ptq, quantize, recurrent, registry
from kedro_edge.errors import KedroEdgeError, first_line
from kedro_edge.runtimes import graph_teacher, input_contract, onnx_export


def apply_technique(
    name: str,
    module: nn.Module,
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    compression: dict,
    training: dict,
) -> tuple[nn.Module, dict | None]:
    """Run technique ``name`` of the plan on ``module``: the new module and its report (or None).

    An architecture the technique cannot take (an error of the technique's library or of the
    model's own code, not of the user's settings) passes through unchanged, in one line that names
    the stage and the setting; the report says it was skipped. With ``compression.<name>.required:
    true`` it stops the run instead (``RequiredStageError``, one line).
    """
    recipe = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    technique = registry.get(name)
    ctx = registry.Context(data.Splits(model_input), train, recipe, teacher)
    try:
        return technique.apply(module, getattr(recipe, name), ctx)
    except KedroEdgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback halfway through a run
        why = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
        registry.pass_on(name, getattr(recipe, name), why)
        return copy.deepcopy(module), ({"skipped": why} if technique.report else None)


def technique_node(name: str) -> Callable[..., object]:
    """The node function of technique ``name``: (module, teacher, model_input, plan, training) ->
    the module, or (module, report) when the technique writes a report."""
    has_report = registry.get(name).report is not None

    def run(module, teacher, model_input, compression, training):
        module, report = apply_technique(name, module, teacher, model_input, compression, training)
        return (module, report) if has_report else module

    run.__name__ = run.__qualname__ = f"{name}_technique"
    run.__doc__ = f"Technique {name!r} of the compression plan (``kedro_edge.compress.registry``)."
    return run


def export_teacher(
    teacher: nn.Module, model_input: dict[str, np.ndarray], compression: dict
) -> onnx.ModelProto:
    """teacher.onnx: FP32, dynamic batch axis, checked, the input contract in its metadata."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    splits = data.Splits(model_input)
    if graph_teacher.is_graph_only(teacher):  # the user's graph, as given (conformed on load)
        return input_contract.stamp(teacher.proto, splits.preprocessing)
    return input_contract.stamp(
        onnx_export.to_onnx(teacher, splits.input_shape, cfg.export.opset), splits.preprocessing
    )


def export_model(
    student: nn.Module, model_input: dict[str, np.ndarray], compression: dict
) -> tuple[onnx.ModelProto, dict]:
    """model.onnx: the student's float weights through ORT's static INT8 QDQ quantizer, the layers
    of ``quantize.exclude`` (or those ``auto`` finds on the validation split) left in float, each
    LSTM dynamically quantized where that is measured to pay (``compress.recurrent``).

    The input contract goes into its metadata and, with ``data.preprocessing.bake``, in front
    of its graph (after quantization: the preprocessing nodes stay float)."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    splits = data.Splits(model_input)
    if graph_teacher.is_graph_only(student):  # a graph-only teacher, passed through every technique
        fp32 = student.proto
    else:
        fp32 = onnx_export.to_onnx(quantize.float_module(student), splits.input_shape, cfg.export.opset)
    if not cfg.quantize.enabled:
        model, report = fp32, {"quantized": False}
    else:
        calib = data.calibration_samples(splits, cfg.quantize.calibration_samples)
        exclude, found = mixed_precision.resolve(fp32, calib, splits, cfg.quantize)
        chosen = cfg.quantize.model_copy(update={"exclude": exclude})
        int8 = fp32 if found.get("int8_pays") is False else ptq.quantize_int8(fp32, calib, chosen)
        model, rnn = recurrent.quantize_recurrent(fp32, int8, splits, chosen)
        report = {"quantized": True, "exclude": exclude, **found, **({"recurrent": rnn} if rnn else {})}
    contract = splits.preprocessing
    if contract is not None and contract.bake:
        model = input_contract.bake(model, contract)
    return input_contract.stamp(model, contract), report
