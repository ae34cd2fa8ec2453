"""Quantization-aware training in torch: fake-quantize so the student learns under INT8 noise.

The scheme matches what ``onnxruntime.quantization`` later emits (QDQ): weights
symmetric int8 per output channel (scale = max|w| / 127), activations asymmetric 8-bit per
tensor from observed min/max (256 levels: the same grid whether ORT stores them as uint8
or int8, only the zero point shifts). Rounding passes gradients straight through (STE, built into
``torch.fake_quantize_*``). Per-channel symmetric weight quantization commutes with the
BatchNorm folding the exporter does, so the trained weights are the ones ORT quantizes.

``to_float`` removes the fake-quant wrappers again: export takes those float weights and
lets ORT produce the INT8 graph (fake-quant ops don't export cleanly, pytorch#167063).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kedro_edge.compress.registry import Context, Technique, TechniqueParams, register
from kedro_edge.data import calibration_samples
from kedro_edge.runtimes.graph_teacher import is_graph_only


class QuantizeParams(TechniqueParams):
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


QMIN, QMAX = -128, 127
WEIGHT_QMAX = 127  # symmetric: [-127, 127], as ORT's symmetric int8 range


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization of a weight tensor."""
    absmax = w.detach().abs().flatten(1).amax(1).clamp(min=1e-8)
    zero = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, absmax / WEIGHT_QMAX, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


class ActivationFakeQuant(nn.Module):
    """Per-tensor asymmetric int8 fake quantization; min/max tracked by EMA while observing."""

    def __init__(self, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.observing = False  # set during calibration; training always observes
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x)  # one pass
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        if not self.initialized:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
            self.initialized.fill_(True)
        else:
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # under bfloat16 autocast too: ranges and the grid in float32
        if self.training or self.observing:
            self._observe(x)
        if not self.initialized:
            return x
        scale = ((self.max_val - self.min_val) / (QMAX - QMIN)).clamp(min=1e-8)
        zero = (QMIN - torch.round(self.min_val / scale)).clamp(QMIN, QMAX).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, QMIN, QMAX)


class QuantConv2d(nn.Module):
    """A Conv2d whose input activation and weights are fake-quantized."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.inner = conv
        self.act = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._conv_forward(self.act(x), fake_quant_weight(self.inner.weight), self.inner.bias)


class QuantLinear(nn.Module):
    """A Linear whose input activation and weights are fake-quantized."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.inner = linear
        self.act = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act(x), fake_quant_weight(self.inner.weight), self.inner.bias)


WRAPPERS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def _swap(module: nn.Module, replace) -> None:
    for name, child in module.named_children():
        new = replace(child)
        if new is not child:
            setattr(module, name, new)
        else:
            _swap(child, replace)


def prepare_qat(model: nn.Module, calibration: np.ndarray, batch_size: int = 64) -> nn.Module:
    """A copy of ``model`` with fake quantization on every conv/linear, activation ranges calibrated."""
    qat = copy.deepcopy(model)
    _swap(qat, lambda m: WRAPPERS[type(m)](m) if type(m) in WRAPPERS else m)
    observers = [m for m in qat.modules() if isinstance(m, ActivationFakeQuant)]
    qat.eval()  # observe activations without touching BatchNorm statistics
    for obs in observers:
        obs.observing = True
    with torch.no_grad():
        for i in range(0, len(calibration), batch_size):
            qat(torch.from_numpy(calibration[i : i + batch_size]))
    for obs in observers:
        obs.observing = False
    return qat


def is_quantization_aware(model: nn.Module) -> bool:
    return any(isinstance(m, ActivationFakeQuant) for m in model.modules())


def to_float(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the fake-quant wrappers replaced by the float layers they wrap."""
    plain = copy.deepcopy(model)
    _swap(plain, lambda m: m.inner if isinstance(m, (QuantConv2d, QuantLinear)) else m)
    return plain.eval()


def float_module(model: nn.Module) -> nn.Module:
    """``model`` as float: fake-quant wrappers removed (a copy) if it has any, else itself in eval mode.

    What the ONNX export takes: ``onnxruntime.quantization`` emits the INT8 graph from these weights.
    """
    return to_float(model) if is_quantization_aware(model) else model.eval()


def apply(module: nn.Module, params: QuantizeParams, ctx: Context) -> tuple[nn.Module, None]:
    """The module with fake quantization (calibrated), ready to train under INT8 noise; its stage
    row is the INT8 graph that ``compress.ptq`` exports at the end. A graph-only teacher has no
    module to train: it passes through, and only the post-training quantization applies."""
    if not params.enabled or is_graph_only(module):
        return module, None
    return prepare_qat(module, calibration_samples(ctx.splits, params.calibration_samples)), None


register(
    Technique("quantize", QuantizeParams, apply, output="qat_module", stage="int8", row="int8", graph=True),
    position=30,
)
