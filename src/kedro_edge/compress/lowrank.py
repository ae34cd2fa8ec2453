"""Low-rank factorisation: a Linear or Conv2d layer replaced by two thinner ones from a truncated SVD.

A weight matrix ``W`` (m x n) of rank ``r`` costs ``r * (m + n)`` multiply-accumulates in
factored form instead of ``m * n``. Trained layers are rarely low-rank exactly, but many
keep most of their energy (sum of squared singular values) in a few directions, so
truncating and fine-tuning loses little accuracy (Denton et al. 2014; Jaderberg et al. 2014).

When it helps: wide Linear layers and wide k x k convs whose spectrum falls off fast, on
hardware where the MACs dominate (large batches, accelerators). The result is still dense,
so it composes with structured pruning (the rank becomes one more prunable dimension)
and with INT8 quantization.

When it makes batch-1 CPU latency worse: each layer becomes two GEMMs/convs, so two
kernel launches and two passes over memory (the r-channel intermediate is written and read
back), and the thin layers use SIMD units less well than one wide one. MACs only win below
``m * n / (m + n)`` (half the width for a square layer), and latency usually needs a rank
well below that. Measure on the device; the report gives the MACs, not the time.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from kedro_edge.compress.registry import Context, Technique, TechniqueParams, register
from kedro_edge.data import Splits
from kedro_edge.models.footprint import footprint
from kedro_edge.models.training import TrainParams, accuracy, finetune


class LowRankParams(TechniqueParams):
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


# a share of energy this close below the threshold counts as reaching it (float rounding)
ENERGY_TOLERANCE = 1e-9

Factorisable = nn.Linear | nn.Conv2d


@dataclass(frozen=True)
class Cost:
    """Weight multiply-accumulates per input sample and weight parameters (biases excluded:
    the bias stays on the second layer, so it costs the same before and after)."""

    macs: int
    params: int

    def cheaper_than(self, other: Cost) -> bool:
        """Fewer MACs and fewer parameters."""
        return self.macs < other.macs and self.params < other.params


@dataclass(frozen=True)
class Site:
    """A layer as the example input ran through it: the shapes decide its MACs."""

    name: str
    layer: Factorisable
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    samples: int  # the example's batch size: MACs are counted per sample, as Torch-Pruning does

    def positions(self) -> int:
        """Output positions per sample at which the weight is applied (pixels, tokens)."""
        channel_axis = -1 if isinstance(self.layer, nn.Linear) else 1
        return int(np.prod(self.out_shape)) // self.out_shape[channel_axis] // self.samples

    def cost(self) -> Cost:
        weights = self.layer.weight.numel()
        return Cost(self.positions() * weights, weights)


class Scheme(Protocol):
    """How a layer's weight becomes a matrix, and how two factors of it become layers."""

    kind: str

    def matrix(self, layer: Factorisable) -> torch.Tensor:
        """The 2-D arrangement of the weight whose truncated SVD gives the two layers."""

    def build(self, layer: Factorisable, left: torch.Tensor, right: torch.Tensor) -> nn.Sequential:
        """Two layers from ``left`` (m x r, applied second) and ``right`` (r x n, applied first)."""

    def cost(self, site: Site, rank: int) -> Cost:
        """MACs and parameters of the factorised form at ``rank``."""


class LinearSVD:
    """``Linear(in, out)`` -> ``Linear(in, r, bias=False)``, ``Linear(r, out)``."""

    kind: ClassVar[str] = "linear"

    def matrix(self, layer: nn.Linear) -> torch.Tensor:
        return layer.weight

    def build(self, layer: nn.Linear, left: torch.Tensor, right: torch.Tensor) -> nn.Sequential:
        rank = right.shape[0]
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        return _filled(layer, first, second, right, left)

    def cost(self, site: Site, rank: int) -> Cost:
        per_position = rank * (site.layer.in_features + site.layer.out_features)
        return Cost(site.positions() * per_position, per_position)


class ChannelSVD:
    """k x k conv -> k x k conv with r filters (same stride, padding, dilation), then 1 x 1 conv r -> out.

    The SVD is of the weight as ``(out, in*k*k)``: each output filter becomes a mix of r
    basis filters (Jaderberg et al. 2014, scheme 1 without the spatial split). A 1 x 1
    conv is the Linear case.
    """

    kind: ClassVar[str] = "conv_channel"

    def matrix(self, layer: nn.Conv2d) -> torch.Tensor:
        return layer.weight.reshape(layer.out_channels, -1)

    def build(self, layer: nn.Conv2d, left: torch.Tensor, right: torch.Tensor) -> nn.Sequential:
        rank = right.shape[0]
        out, cin, kh, kw = layer.weight.shape
        first = _conv(layer, cin, rank, (kh, kw), layer.stride, layer.padding, layer.dilation)
        second = nn.Conv2d(rank, out, 1, bias=layer.bias is not None)
        return _filled(layer, first, second, right.reshape(rank, cin, kh, kw), left.reshape(out, rank, 1, 1))

    def cost(self, site: Site, rank: int) -> Cost:
        out, cin, kh, kw = site.layer.weight.shape
        per_position = rank * (cin * kh * kw + out)
        return Cost(site.positions() * per_position, per_position)


class SpatialSVD:
    """kh x kw conv -> kh x 1 conv in -> r, then 1 x kw conv r -> out (Jaderberg et al. 2014, scheme 2).

    ``W[n, c, i, j] = sum_k H[n, k, j] V[k, c, i]``: the SVD is of ``W`` rearranged to
    ``M[(c, i), (n, j)]`` (in*kh x out*kw); its left factor gives the vertical filters ``V``,
    its right factor the horizontal filters ``H``. Stride, padding and dilation split per
    axis, so at full rank the pair computes exactly what the original conv did.
    """

    kind: ClassVar[str] = "conv_spatial"

    def matrix(self, layer: nn.Conv2d) -> torch.Tensor:
        out, cin, kh, kw = layer.weight.shape
        return layer.weight.permute(1, 2, 0, 3).reshape(cin * kh, out * kw)

    def build(self, layer: nn.Conv2d, left: torch.Tensor, right: torch.Tensor) -> nn.Sequential:
        out, cin, kh, kw = layer.weight.shape
        rank = right.shape[0]
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        # "same"/"valid" mean the same per axis; numbers split: rows padded first, columns second
        pad = layer.padding
        pad_v, pad_h = (pad, pad) if isinstance(pad, str) else ((pad[0], 0), (0, pad[1]))
        vertical = _conv(layer, cin, rank, (kh, 1), (sh, 1), pad_v, (dh, 1))
        horizontal = _conv(layer, rank, out, (1, kw), (1, sw), pad_h, (1, dw), bias=layer.bias is not None)
        v = left.T.reshape(rank, cin, kh, 1)
        h = right.reshape(rank, out, kw).permute(1, 0, 2).reshape(out, rank, 1, kw)
        return _filled(layer, vertical, horizontal, v, h)

    def cost(self, site: Site, rank: int) -> Cost:
        out, cin, kh, kw = site.layer.weight.shape
        # the vertical conv keeps the input's width: it runs at out_height x in_width positions
        vertical = site.out_shape[-2] * site.in_shape[-1]
        macs = rank * cin * kh * vertical + site.positions() * rank * out * kw
        return Cost(macs, rank * (cin * kh + out * kw))


SCHEMES: dict[str, Scheme] = {"linear": LinearSVD(), "channel": ChannelSVD(), "spatial": SpatialSVD()}


def _conv(
    like: nn.Conv2d,
    c_in: int,
    c_out: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] | str,
    dilation: tuple[int, int],
    bias: bool = False,
) -> nn.Conv2d:
    return nn.Conv2d(
        c_in, c_out, kernel, stride, padding, dilation, bias=bias, padding_mode=like.padding_mode
    )


def _filled(
    layer: Factorisable, first: nn.Module, second: nn.Module, w_first: torch.Tensor, w_second: torch.Tensor
) -> nn.Sequential:
    """``first`` then ``second`` with the given weights, the original bias on ``second``,
    on the original's device and dtype, trainable as the original was."""
    weight = layer.weight
    pair = nn.Sequential(first, second).to(device=weight.device, dtype=weight.dtype).train(layer.training)
    with torch.no_grad():
        first.weight.copy_(w_first)
        second.weight.copy_(w_second)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    for p in pair.parameters():
        p.requires_grad_(weight.requires_grad)
    return pair


def scheme_for(layer: Factorisable, conv: Literal["channel", "spatial"]) -> Scheme:
    """Linear layers have one scheme; a conv with a kernel side of 1 has nothing to split spatially."""
    if isinstance(layer, nn.Linear):
        return SCHEMES["linear"]
    return SCHEMES[conv] if min(layer.kernel_size) > 1 else SCHEMES["channel"]


def split_layer(
    layer: Factorisable, rank: int, conv: Literal["channel", "spatial"] = "channel"
) -> nn.Sequential:
    """The two-layer form of ``layer`` keeping its ``rank`` largest singular values."""
    scheme = scheme_for(layer, conv)
    left, right, _ = _factors(scheme.matrix(layer))
    return scheme.build(layer, left[:, :rank], right[:rank])


def _factors(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``U sqrt(S)``, ``sqrt(S) V^T`` (float64: the small singular values stay accurate) and the
    cumulative share of energy kept by ranks 1, 2, ..."""
    u, s, vt = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s.sqrt()
    energy = np.cumsum(s.numpy() ** 2)
    energy = energy / energy[-1] if energy[-1] > 0 else np.ones_like(energy)
    return u * root, root[:, None] * vt, energy


@dataclass(frozen=True)
class _Plan:
    """One factorisable layer with its SVD, waiting for a rank."""

    site: Site
    scheme: Scheme
    left: torch.Tensor
    right: torch.Tensor
    energy: np.ndarray

    def rank(self, threshold: float, min_rank: int) -> int:
        """Smallest rank keeping ``threshold`` of the energy, at least ``min_rank``, at most full."""
        smallest = int(np.searchsorted(self.energy, threshold - ENERGY_TOLERANCE, side="left")) + 1
        return min(max(smallest, min_rank), len(self.energy))

    def saving(self, rank: int) -> int:
        """MACs saved at ``rank``; 0 if the factorised form is not cheaper (the layer then stays)."""
        before, after = self.site.cost(), self.scheme.cost(self.site, rank)
        return before.macs - after.macs if after.cheaper_than(before) else 0


def _sites(model: nn.Module, example: torch.Tensor) -> tuple[list[Site], list[dict]]:
    """Linear/Conv2d layers with their shapes on ``example``, and those that cannot be factorised."""
    shapes: dict[nn.Module, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        # checked at call time: a lazy layer has become a Linear by now
        if type(module) in (nn.Linear, nn.Conv2d):
            shapes.setdefault(module, []).append((tuple(args[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    sites, skipped = [], []
    # exact types: subclasses (e.g. MultiheadAttention's out_proj) may have their weight read directly
    for name, module in model.named_modules():
        if type(module) not in (nn.Linear, nn.Conv2d):
            continue
        calls = shapes.get(module, [])
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            reason = f"grouped conv (groups={module.groups}): each group is already a small matrix"
        elif not calls:
            reason = "not run by the example input"
        elif len(calls) > 1:
            reason = f"called {len(calls)} times per forward pass (shared weights)"
        else:
            sites.append(Site(name, module, *calls[0], samples=len(example)))
            continue
        skipped.append({"name": name, "reason": reason})
    return sites, skipped


def _threshold_for_target(
    plans: list[_Plan], total_macs: int, goal: float, min_rank: int
) -> tuple[float, bool]:
    """The largest energy threshold, shared by all layers, whose ranks keep the model within
    ``goal`` MACs, and whether the goal is reachable at all (else: the smallest threshold).

    Total MACs grow with the threshold, so a binary search over the thresholds at which
    some layer's rank changes (every layer's cumulative energies) finds it exactly.
    """
    if not plans:
        return 1.0, total_macs <= goal
    candidates = np.unique(np.concatenate([p.energy for p in plans]))

    def macs(threshold: float) -> int:
        return total_macs - sum(p.saving(p.rank(threshold, min_rank)) for p in plans)

    if macs(candidates[0]) > goal:
        return float(candidates[0]), False
    low, high = 0, len(candidates) - 1  # macs(candidates[low]) <= goal
    while low < high:
        mid = (low + high + 1) // 2
        if macs(candidates[mid]) <= goal:
            low = mid
        else:
            high = mid - 1
    return float(candidates[low]), True


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:  # the model is itself the layer
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model


def factorise(model: nn.Module, example: torch.Tensor, cfg: LowRankParams) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with each Linear and groups=1 Conv2d replaced by its truncated SVD; no training.

    Ranks come from ``cfg.energy`` (per layer: the smallest rank keeping that share of
    sigma^2) or ``cfg.target_macs`` (one energy threshold for all layers, the largest that
    keeps the model within that share of its MACs: layers with a flat spectrum keep more
    rank than layers with a steep one, which a uniform rank fraction would ignore).
    A layer stays as it is when its factorised form would not cost fewer MACs and fewer
    parameters; ``report["skipped"]`` says why for each such layer.

    Args:
        model: left unchanged.
        example: one input batch; the layer shapes on it decide the MACs.
        cfg: ranks and the conv scheme.

    Returns:
        The factorised copy (eval mode) and a report.
    """
    model = copy.deepcopy(model)
    before = footprint(model, example)
    sites, skipped = _sites(model, example)
    plans = []
    for site in sites:
        scheme = scheme_for(site.layer, cfg.conv)
        plans.append(_Plan(site, scheme, *_factors(scheme.matrix(site.layer))))

    report: dict = {"method": "lowrank", "conv": cfg.conv, "target_macs": cfg.target_macs}
    if cfg.target_macs is not None:
        threshold, report["target_met"] = _threshold_for_target(
            plans, before.macs, cfg.target_macs * before.macs, cfg.min_rank
        )
    else:
        threshold = cfg.energy
    report["energy"] = threshold

    layers = []
    for plan in plans:
        site, rank = plan.site, plan.rank(threshold, cfg.min_rank)
        old, new = site.cost(), plan.scheme.cost(site, rank)
        if not new.cheaper_than(old):
            skipped.append(
                {
                    "name": site.name,
                    "reason": f"rank {rank} of {len(plan.energy)} would cost {new.macs} MACs and "
                    f"{new.params} weights, not fewer than {old.macs} and {old.params}",
                }
            )
            continue
        pair = plan.scheme.build(site.layer, plan.left[:, :rank], plan.right[:rank])
        model = _replace(model, site.name, pair)
        layers.append(
            {
                "name": site.name,
                "kind": plan.scheme.kind,
                "shape": list(site.layer.weight.shape),
                "rank": rank,
                "full_rank": len(plan.energy),
                "energy": float(plan.energy[rank - 1]),
                "macs_before": old.macs,
                "macs_after": new.macs,
            }
        )
    after = footprint(model, example)
    report |= {
        "before": asdict(before),
        "after": asdict(after),
        "macs_reduction": before.macs / after.macs,
        "layers": layers,
        "skipped": skipped,
    }
    return model.eval(), report


def lowrank(
    teacher: nn.Module, splits: Splits, cfg: LowRankParams, train: TrainParams
) -> tuple[nn.Module, dict]:
    """Factorise ``teacher`` and fine-tune for ``cfg.finetune_epochs`` at ``cfg.lr``; disabled returns a copy.

    The report adds the validation accuracy before and after fine-tuning. Nothing is
    trained when no layer was factorised.
    """
    example = splits.example()
    if not cfg.enabled:
        fp = asdict(footprint(teacher, example))
        return copy.deepcopy(teacher).eval(), {"method": "none", "before": fp, "after": fp}
    model, report = factorise(teacher, example, cfg)
    x_val, y_val = splits.x("val"), splits.y("val")
    report["val_accuracy_before_finetune"] = accuracy(model, x_val, y_val)
    if report["layers"]:
        finetune(model, splits, cfg.finetune_epochs, cfg.lr, train, train.seed, "low-rank fine-tune")
    report["val_accuracy"] = accuracy(model, x_val, y_val)
    return model.eval(), report


def apply(module: nn.Module, params: LowRankParams, ctx: Context) -> tuple[nn.Module, dict]:
    return lowrank(module, ctx.splits, params, ctx.train)


register(
    Technique(
        "lowrank", LowRankParams, apply, output="lowrank_module", report="lowrank_report", stage="lowrank"
    ),
    position=10,
)
