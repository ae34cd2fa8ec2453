"""The search space: what one trial may change, drawn from an Optuna trial, and the recipe it makes.

Channels are kept per *stage* (NetAdapt's per-resolution groups, not one global ratio): the
prunable layers grouped by the spatial size of their output, Linear layers as ``head``. A
uniform width multiplier scales every stage (the practical form of choosing a smaller student:
the narrower model inherits the trained teacher's weights instead of starting from scratch).
Low-rank energy, clustering k and which end layers stay float in the INT8 graph complete it.
Every setting maps onto ``compression.*`` parameters, so the chosen trial becomes an ordinary
recipe that the rest of the pipeline runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from kedro_edge.models.footprint import output_layers
from kedro_edge.search.params import CompressionParams, SearchParams, SearchSpace

MIN_KEEP = 0.05  # a stage never loses all its channels


@dataclass(frozen=True)
class Stage:
    name: str  # "16x16", or "head" for Linear layers
    layers: tuple[str, ...]  # module names of its prunable Conv2d / Linear layers


def stages(model: nn.Module, example: torch.Tensor) -> list[Stage]:
    """Prunable layers grouped by output resolution, in the order the forward pass reaches them.

    The output layer is left out: its channels are the classes.
    """
    skip = {id(m) for m in output_layers(model)}
    seen: dict[str, list[str]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in skip:

            def record(mod: nn.Module, _inp: Any, out: torch.Tensor, name: str = name) -> None:
                key = "head" if out.dim() == 2 else f"{out.shape[-2]}x{out.shape[-1]}"
                seen.setdefault(key, []).append(name)

            handles.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [Stage(key, tuple(dict.fromkeys(names))) for key, names in seen.items()]


@dataclass(frozen=True)
class Settings:
    """One trial's choices. ``keep`` is per stage name; the layer ratios follow from it."""

    keep: dict[str, float]
    width: float = 1.0
    lowrank_energy: float | None = None
    cluster_k: int = 0
    exclude_first: bool = False
    exclude_last: bool = False

    def kept(self, stage: str) -> float:
        """Share of ``stage``'s channels kept: its keep times the width, at least MIN_KEEP."""
        return max(MIN_KEEP, min(1.0, self.keep.get(stage, 1.0) * self.width))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample(trial: Any, space: SearchSpace, stage_names: list[str], recipe: CompressionParams) -> Settings:
    """Draw a trial's settings with Optuna's ``suggest_*``; what the space leaves out is the recipe's."""
    fixed = from_recipe(recipe, stage_names)
    keep = {
        s: trial.suggest_float(f"keep_{s}", *space.keep) if space.keep else fixed.keep[s] for s in stage_names
    }
    width = trial.suggest_categorical("width", list(space.width)) if space.width else 1.0
    energy = fixed.lowrank_energy
    if space.lowrank_energy:
        energy = (
            trial.suggest_float("lowrank_energy", *space.lowrank_energy)
            if trial.suggest_categorical("lowrank", [False, True])
            else None
        )
    k = trial.suggest_categorical("cluster_k", list(space.cluster_k)) if space.cluster_k else fixed.cluster_k
    first, last = fixed.exclude_first, fixed.exclude_last
    if space.exclude_ends:
        first = trial.suggest_categorical("exclude_first", [False, True])
        last = trial.suggest_categorical("exclude_last", [False, True])
    return Settings(keep, width, energy, k, first, last)


def from_recipe(cfg: CompressionParams, stage_names: list[str]) -> Settings:
    """The fixed recipe (``conf/base``) as settings: every stage keeps ``1 - prune.ratio``."""
    ratio = cfg.prune.ratio if cfg.prune.enabled and cfg.prune.ratio is not None else 0.0
    return Settings(
        keep={s: 1.0 - ratio for s in stage_names},
        lowrank_energy=cfg.lowrank.energy if cfg.lowrank.enabled else None,
        cluster_k=cfg.cluster.k if cfg.cluster.enabled else 0,
    )


def recipe_params(cfg: CompressionParams, space: SearchSpace, stage_names: list[str]) -> dict[str, Any]:
    """Optuna parameters of the fixed recipe (enqueued as trial 0; Optuna takes a value outside the
    space's range as given, with a warning)."""
    fixed = from_recipe(cfg, stage_names)
    params: dict[str, Any] = {}
    if space.keep:
        params.update({f"keep_{s}": fixed.keep[s] for s in stage_names})
    if space.width and 1.0 in space.width:
        params["width"] = 1.0
    if space.lowrank_energy:
        params["lowrank"] = fixed.lowrank_energy is not None
        if fixed.lowrank_energy is not None:
            params["lowrank_energy"] = fixed.lowrank_energy
    if space.cluster_k and fixed.cluster_k in space.cluster_k:
        params["cluster_k"] = fixed.cluster_k
    if space.exclude_ends:
        params.update(exclude_first=False, exclude_last=False)
    return params


def without_search(cfg: CompressionParams) -> CompressionParams:
    """The recipe part of ``cfg``: its search section back to the defaults (off), so a plan changes
    only when what the pipeline runs changes."""
    return cfg.model_copy(update={"search": SearchParams()})


def to_recipe(
    settings: Settings, cfg: CompressionParams, found: list[Stage], exclude: list[str]
) -> CompressionParams:
    """``cfg`` with the trial's choices: the recipe the rest of the pipeline runs for this candidate.

    ``found`` are the stages of the model pruning starts from (after low-rank, if any): their
    layer names become ``prune.layer_ratios``. ``exclude`` are the ONNX node names kept float.
    """
    ratios = {layer: round(1.0 - settings.kept(s.name), 6) for s in found for layer in s.layers}
    prune = cfg.prune.model_copy(
        update={
            "enabled": True,
            "method": "structured",
            "ratio": cfg.prune.ratio if cfg.prune.ratio is not None else 0.5,
            "target_macs": None,
            "layer_ratios": ratios,
        }
    )
    lowrank = cfg.lowrank.model_copy(
        update={
            "enabled": settings.lowrank_energy is not None,
            "energy": settings.lowrank_energy
            if settings.lowrank_energy is not None
            else cfg.lowrank.energy or 0.9,
            "target_macs": None,
        }
    )
    cluster = cfg.cluster.model_copy(
        update={"enabled": settings.cluster_k > 0, "k": settings.cluster_k or cfg.cluster.k}
    )
    quantize = cfg.quantize.model_copy(update={"exclude": exclude})
    return CompressionParams.model_validate(
        {
            **without_search(cfg).model_dump(),
            "prune": prune.model_dump(),
            "lowrank": lowrank.model_dump(),
            "cluster": cluster.model_dump(),
            "quantize": quantize.model_dump(),
        }
    )
