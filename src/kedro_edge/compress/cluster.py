"""Weight clustering: per-layer k-means weight sharing, so a compressor needs ~log2(k) bits a weight.

Each large enough Conv2d/Linear weight (also inside the QAT wrappers) is replaced by the
nearest of ``k`` shared values found by k-means on its values (Han et al., Deep Compression,
2016). The tensor keeps its shape and dtype: nothing is faster, but lzma on the shipped ONNX
file finds far fewer distinct bytes. Fine-tuning keeps every weight's cluster fixed and trains
the ``k`` shared values only, so shared stays shared.

It survives the INT8 export: BatchNorm folding scales each output channel by one factor and
per-channel symmetric INT8 maps each channel's values through one rounding function, so a
channel with at most ``k`` distinct floats holds at most ``k`` distinct INT8 values
(``distinct_values_per_channel`` checks that on the ONNX graph).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from pydantic import Field
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize

from kedro_edge.compress.registry import Context, Technique, TechniqueParams, register
from kedro_edge.data import Splits
from kedro_edge.models.training import TrainParams, accuracy, finetune


class ClusterParams(TechniqueParams):
    """Per-layer k-means weight sharing (``compress.cluster``): fewer distinct values, fewer bytes shipped."""

    k: int = Field(16, ge=2, le=256)  # shared values per layer
    min_weights: int = Field(256, ge=1)  # layers with fewer weights stay as they are
    finetune_epochs: int = Field(1, ge=0)  # centroids trained, assignments fixed: shared stays shared
    lr: float = Field(1e-4, gt=0)


CLUSTERED = (nn.Conv2d, nn.Linear)  # the QAT wrappers hold one of these as ``inner``

_INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


def _distinct(t: torch.Tensor) -> int:
    return int(torch.unique(t.detach()).numel())


def kmeans_values(values: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, labels)`` of 1-D k-means on ``values``; at most ``k`` centroids.

    Centroids start linearly spaced over [min, max], not at quantiles or random picks: the
    few large weights matter most and only a linear start gives them clusters of their own
    (Deep Compression, sec. 3.1). With one fixed start, a single run (``n_init=1``) is
    deterministic.
    """
    x = values.astype(np.float64).reshape(-1, 1)
    unique = np.unique(x)
    if len(unique) <= k:
        return unique.astype(np.float32), np.searchsorted(unique, x.ravel())
    init = np.linspace(unique[0], unique[-1], k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(x)
    return km.cluster_centers_.ravel().astype(np.float32), km.labels_


def _targets(model: nn.Module, cfg: ClusterParams) -> tuple[list[tuple[str, nn.Module]], list[dict]]:
    """The (name, layer) pairs to cluster, and the skipped layers with the reason why."""
    chosen, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, CLUSTERED):
            continue
        if parametrize.is_parametrized(module, "weight"):
            skipped.append({"name": name, "reason": "weight already parametrized"})
        elif module.weight.numel() < cfg.min_weights:
            skipped.append({"name": name, "reason": f"{module.weight.numel()} weights < {cfg.min_weights}"})
        else:
            chosen.append((name, module))
    return chosen, skipped


def cluster_weights(model: nn.Module, cfg: ClusterParams) -> tuple[nn.Module, dict]:
    """A copy of ``model`` whose large conv/linear weights each hold at most ``cfg.k`` shared values.

    No training. Biases, BatchNorm and layers under ``cfg.min_weights`` weights stay as they are.

    Returns:
        The clustered copy (plain modules, eval mode) and a report with per-layer distinct
        value counts before and after, and the skipped layers.
    """
    clustered = copy.deepcopy(model)
    targets, skipped = _targets(clustered, cfg)
    layers = []
    for name, module in targets:
        weight = module.weight
        centroids, labels = kmeans_values(weight.detach().cpu().numpy(), cfg.k)
        shared = torch.from_numpy(centroids[labels].reshape(weight.shape)).to(weight)
        before = _distinct(weight)
        with torch.no_grad():
            weight.copy_(shared)
        layers.append(
            {
                "name": name,
                "weights": weight.numel(),
                "distinct_before": before,
                "distinct_after": _distinct(weight),
            }
        )
    return clustered.eval(), {"method": "kmeans", "k": cfg.k, "layers": layers, "skipped": skipped}


class _Gather(torch.autograd.Function):
    """``centroids[index]`` whose backward sums each cluster's gradients in a fixed order.

    Plain indexing's backward accumulates with parallel adds on the CPU, in an order that varies
    between runs: the centroids then differ in their last bits, and so do the INT8 activation
    scales and the bytes of model.onnx. ``bincount`` sums serially (in float64), so the same run
    gives the same model.
    """

    @staticmethod
    def forward(ctx: Any, centroids: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.k = centroids.numel()
        return centroids[index]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        sums = torch.bincount(index.reshape(-1), weights=grad.reshape(-1).double(), minlength=ctx.k)
        return sums.to(grad.dtype), None


class SharedWeights(nn.Module):
    """Parametrization ``weight = centroids[index]``: assignments fixed, shared values trainable.

    The gradients of all weights in a cluster are summed into its centroid, so a training step
    moves every member of a cluster by the same amount.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        values, index = torch.unique(weight.detach(), return_inverse=True)
        self.centroids = nn.Parameter(values)
        self.register_buffer("index", index)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return _Gather.apply(self.centroids, self.index)


def _finetune_centroids(
    model: nn.Module, names: list[str], splits: Splits, cfg: ClusterParams, train: TrainParams
) -> None:
    """Train only the shared values of the ``names`` layers, in place; then make them plain weights.

    Every other parameter is frozen (restored afterwards). BatchNorm running statistics do
    follow the new weights, as in any fine-tuning: they describe activations the weights produce.
    """
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in trainable:
        p.requires_grad_(False)
    layers = [model.get_submodule(name) for name in names]
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", SharedWeights(layer.weight))
    try:
        finetune(model, splits, cfg.finetune_epochs, cfg.lr, train, train.seed, "cluster fine-tune")
    finally:
        for layer in layers:  # the original Parameter objects come back, holding centroids[index]
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        for p, flag in trainable.items():
            p.requires_grad_(flag)


def cluster(
    student: nn.Module, splits: Splits, cfg: ClusterParams, train: TrainParams
) -> tuple[nn.Module, dict]:
    """Cluster ``student``'s weights, fine-tune the shared values, and report accuracy and counts.

    Disabled clustering returns an unchanged copy and ``{"method": "none"}``.

    Returns:
        The clustered model (plain modules, eval mode) and the ``cluster_weights`` report plus
        ``val_accuracy_before_finetune``, ``val_accuracy`` (validation split) and
        ``distinct_after_finetune`` per layer.
    """
    if not cfg.enabled:
        return copy.deepcopy(student).eval(), {"method": "none"}
    model, report = cluster_weights(student, cfg)
    x_val, y_val = splits.x("val"), splits.y("val")
    report["val_accuracy_before_finetune"] = accuracy(model, x_val, y_val)
    names = [layer["name"] for layer in report["layers"]]
    if names and cfg.finetune_epochs:
        _finetune_centroids(model, names, splits, cfg, train)
    for layer in report["layers"]:
        layer["distinct_after_finetune"] = _distinct(model.get_submodule(layer["name"]).weight)
    report["val_accuracy"] = accuracy(model, x_val, y_val)
    return model.eval(), report


def _weight_inputs(node: onnx.NodeProto) -> tuple[str, int] | None:
    """(quantized weight input, its output-channel axis) of a node that dequantizes weights."""
    if node.op_type == "DequantizeLinear":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)  # ONNX default axis: 1
        return node.input[0], axis
    if node.op_type == "QLinearConv":
        return node.input[3], 0
    return None


def distinct_values_per_channel(model: onnx.ModelProto) -> dict[str, int]:
    """Per INT8 weight initializer of a quantized graph: the most distinct values in one output channel.

    Per-channel weights are split along their quantization axis; per-tensor ones along axis 0
    (a conv's or Gemm's output channels). Activations, scalars and int32 biases are left out.
    """
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, int] = {}
    for node in model.graph.node:
        found = _weight_inputs(node)
        if found is None or found[0] not in inits or found[0] in out:
            continue
        name, axis = found
        if inits[name].data_type not in _INT8_TYPES or len(inits[name].dims) < 2:
            continue
        w = numpy_helper.to_array(inits[name])
        scale = inits.get(node.input[1])
        if scale is None or np.prod(scale.dims, dtype=int) == 1:
            axis = 0
        channels = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        out[name] = max(len(np.unique(c)) for c in channels)
    return out


def apply(module: nn.Module, params: ClusterParams, ctx: Context) -> tuple[nn.Module, dict]:
    return cluster(module, ctx.splits, params, ctx.train)


register(
    Technique(
        "cluster", ClusterParams, apply, output="clustered_module", report="cluster_report", stage="clustered"
    ),
    position=50,
)
