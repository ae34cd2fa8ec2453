"""Pruning: structured (channels physically removed, Torch-Pruning's DepGraph) or unstructured.

Structured pruning is what makes a model smaller and faster: DepGraph finds every layer
coupled to a channel (BatchNorm, the other side of a residual addition, the next conv's
inputs) and removes it everywhere at once. Unstructured magnitude pruning only zeroes
weights: the dense ONNX file and its latency do not change unless a sparse format and
sparse kernels follow. It is here for comparison and for users who have such a runtime.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Collection
from dataclasses import asdict
from typing import Annotated, Literal

import torch
import torch_pruning as tp
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from kedro_edge.compress import heads
from kedro_edge.compress.registry import Context, Technique, TechniqueParams, pass_on, register
from kedro_edge.data import Splits, batches
from kedro_edge.errors import ConfigError, first_line
from kedro_edge.models.footprint import footprint, output_layers
from kedro_edge.models.training import TrainParams, accuracy, finetune, predict


class PruneParams(TechniqueParams):
    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    ratio: float | None = Field(0.5, gt=0, lt=1)  # fraction of each layer's channels removed
    target_macs: float | None = Field(None, gt=0, lt=1)  # or: keep this fraction of the MACs
    steps: int = Field(3, ge=1)  # iterative schedule: prune a little, fine-tune, repeat
    finetune_epochs: int = Field(2, ge=0)
    lr: float = Field(1e-3, gt=0)
    # what each step's fine-tune learns from: the labels, or the teacher's soft targets (the
    # distillation loss of compression.distill): small nets recover far more of what a step cost
    recover: Literal["labels", "teacher"] = "labels"
    global_pruning: bool = False
    round_to: int | None = Field(None, ge=1)  # keep channel counts multiples of this
    # per-layer ratios by module name (what the search chooses, NetAdapt-style); layers not
    # named here take ``ratio``
    layer_ratios: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=dict)
    # layers left alone: module names or shell patterns ("features.0.*", "*.attn.qkv"); layers the
    # pruner cannot handle are found and left alone too (prune_report.json says which and why)
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_target(self) -> PruneParams:
        if self.method == "structured" and (self.ratio is None) == (self.target_macs is None):
            raise ValueError("set exactly one of 'ratio' and 'target_macs'")
        if self.method == "unstructured" and self.ratio is None:
            raise ValueError("unstructured pruning needs 'ratio'")
        return self


# Importance criteria by parameter name (compression.prune.importance).
IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}


def layer_ratios(model: nn.Module, ratios: dict[str, float]) -> dict[nn.Module, float]:
    """``compression.prune.layer_ratios`` keyed by module; a name that is no Conv/Linear is an error."""
    modules = dict(model.named_modules())
    for name in ratios:
        if not isinstance(modules.get(name), (nn.Conv2d, nn.Linear)):
            raise ConfigError(
                f"parameter 'compression.prune.layer_ratios': {name!r} is not a Conv2d or Linear of the model"
            )
    return {modules[name]: ratio for name, ratio in ratios.items()}


def _pruner(
    model: nn.Module, example: torch.Tensor, cfg: PruneParams, ratio: float, left: Collection[str] = ()
) -> tp.pruner.BasePruner:
    """Torch-Pruning's pruner for ``model``: the output layer, ``cfg.ignore`` and the layers named in
    ``left`` are not pruned; attention modules lose whole heads (``kedro_edge.compress.heads``)."""
    modules = dict(model.named_modules())
    ignored = output_layers(model) + [
        modules[name] for name in sorted(set(left) | set(ignored_names(model, cfg)))
    ]
    return _RoundingPruner(
        model,
        example,
        importance=IMPORTANCES[cfg.importance](),
        pruning_ratio=ratio,
        pruning_ratio_dict=layer_ratios(model, cfg.layer_ratios) or None,
        iterative_steps=cfg.steps,
        ignored_layers=ignored,
        global_pruning=cfg.global_pruning,
        round_to=cfg.round_to,
        **heads.pruner_kwargs(model, ratio),
    )


class _RoundingPruner(tp.pruner.BasePruner):
    """Torch-Pruning's pruner whose ``round_to`` never rounds a layer down to nothing.

    Torch-Pruning rounds the channels kept *down* to a multiple of ``round_to``: a layer keeping
    fewer than ``round_to`` would lose every channel. Here it keeps one multiple (all its channels
    when it has fewer), so ``round_to: 8`` is safe on narrow layers too.
    """

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        kept = current_channels - n_pruned
        rounded = kept - kept % round_to or min(current_channels, round_to)
        return max(current_channels - rounded, 0)


def ignored_names(model: nn.Module, cfg: PruneParams) -> list[str]:
    """The modules ``compression.prune.ignore`` names; a pattern that matches none is an error."""
    names = [n for n, _ in model.named_modules() if n]
    found: list[str] = []
    for pattern in cfg.ignore:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(
                f"parameter 'compression.prune.ignore': {pattern!r} matches no layer of the model"
            )
        found.extend(matched)
    return found


def _step(pruner: tp.pruner.BasePruner, model: nn.Module) -> None:
    pruner.step()
    heads.sync(model, pruner)
    model.zero_grad(set_to_none=True)


def unprunable(model: nn.Module, example: torch.Tensor, cfg: PruneParams) -> dict[str, str]:
    """Layers whose channels Torch-Pruning cannot remove here, by name, with the reason.

    First the whole plan is tried on a copy; only if that fails is each group of coupled layers
    tried alone (two channels removed, then a forward pass), and the groups that fail are left
    alone. A model whose graph cannot be traced at all is an error naming the stage.
    """
    ignored_names(model, cfg)  # a pattern or a layer that matches nothing is the user's error, said first
    layer_ratios(model, cfg.layer_ratios)
    # which channels go does not matter here, only whether removing them works: L2 needs no gradients
    one = cfg.model_copy(update={"steps": 1, "global_pruning": False, "importance": "l2"})
    try:
        trial = copy.deepcopy(model)
        _step(_pruner(trial, example, one, 0.5), trial)
        trial(example)
        return {}
    except Exception:  # noqa: BLE001 - any failure: find the groups that cause it
        pass
    found = _untraceable(model, example, one)
    index, more = 0, True
    while more:  # group ``index`` alone, on a fresh copy; the pruner picks its channels (whole heads)
        trial = copy.deepcopy(model)
        try:
            pruner = _pruner(trial, example, one, 0.5, found)
            groups = pruner.step(interactive=True)
            for _ in range(index):
                next(groups)
            group = next(groups, None)
        except Exception as exc:  # noqa: BLE001 - the graph itself cannot be traced
            raise PruneError(
                f"Torch-Pruning cannot trace the model ({type(exc).__name__}: {first_line(exc)})"
            ) from None
        if group is None:
            more = False
            continue
        root = _name_of(trial, group[0].dep.target.module)
        try:
            group.prune()
            heads.sync(trial, pruner)
            with torch.no_grad():
                trial.eval()(example)
        except Exception as exc:  # noqa: BLE001 - the pruner's or the model's own error
            found[root] = f"{type(exc).__name__}: {first_line(exc)}"
            continue  # now left alone, the group is out of the enumeration: same index next
        index += 1
    return found


def _untraceable(model: nn.Module, example: torch.Tensor, cfg: PruneParams) -> dict[str, str]:
    """Layers whose coupled channels Torch-Pruning cannot even work out (a channel shuffle, ...)."""
    trial = copy.deepcopy(model)
    try:
        graph = _pruner(trial, example, cfg, 0.5).DG
    except Exception as exc:  # noqa: BLE001 - the graph itself cannot be traced
        raise PruneError(
            f"Torch-Pruning cannot trace the model ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    found: dict[str, str] = {}
    for name, module in trial.named_modules():
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        try:
            prune_out = graph.get_pruner_of_module(module).prune_out_channels
            graph.get_pruning_group(module, prune_out, idxs=[0])
        except Exception as exc:  # noqa: BLE001 - the index mapping of an op it does not follow
            found[name] = f"{type(exc).__name__}: {first_line(exc)}"
    return found


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is module), type(module).__name__)


class PruneError(Exception):
    """Pruning cannot apply to this model at all (the stage is skipped, saying why)."""


def one_shot(model: nn.Module, example: torch.Tensor, cfg: PruneParams) -> nn.Module:
    """Remove ``cfg``'s channels in one step, in place, untrained (the graph a search trial is timed on)."""
    left = unprunable(model, example, cfg)
    ratio = cfg.ratio if cfg.ratio is not None else ratio_for_target_macs(model, example, cfg, left)
    _step(_pruner(model, example, cfg.model_copy(update={"steps": 1}), ratio, left), model)
    return model


def ratio_for_target_macs(
    model: nn.Module, example: torch.Tensor, cfg: PruneParams, left: Collection[str] = ()
) -> float:
    """Smallest channel ratio whose one-shot L2 pruning keeps at most ``cfg.target_macs`` of the MACs."""
    goal = footprint(model, example).macs * cfg.target_macs
    low, high = 0.0, 0.95
    for _ in range(12):
        mid = (low + high) / 2
        trial = copy.deepcopy(model)
        probe = cfg.model_copy(update={"steps": 1, "importance": "l2"})
        _step(_pruner(trial, example, probe, mid, left), trial)
        if footprint(trial, example).macs <= goal:
            high = mid
        else:
            low = mid
    return high


def _accumulate_gradients(model: nn.Module, splits: Splits, batch_size: int, n_batches: int = 4) -> None:
    """Taylor importance needs d(loss)/d(weight) on training data."""
    model.zero_grad()
    model.train()
    for i, (xb, yb) in enumerate(batches(splits.x("train"), splits.y("train"), batch_size, True)):
        if i == n_batches:
            break
        splits.task.loss(model(xb), yb).backward()


def _recovery(cfg: PruneParams, reference: nn.Module | None, splits: Splits) -> dict:
    """``finetune``'s loss and targets for ``cfg.recover``: the labels, or ``reference``'s soft targets."""
    if cfg.recover == "labels" or reference is None:
        return {}
    from kedro_edge.compress.distill import DistillParams, loss_of

    targets = predict(reference, splits.x("train"))
    return {"loss_fn": loss_of(DistillParams(), splits.task), "targets": targets}


def structured_prune(
    teacher: nn.Module,
    splits: Splits,
    cfg: PruneParams,
    train: TrainParams,
    reference: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """Remove channels in ``cfg.steps`` steps with fine-tuning after each; return the student and a
    report. ``reference`` (the pipeline's teacher) gives the soft targets of ``recover: teacher``."""
    recovery = _recovery(cfg, reference if reference is not None else teacher, splits)
    model = copy.deepcopy(teacher)
    example = splits.example()
    before = footprint(model, example)
    left = unprunable(model, example, cfg)
    ratio = cfg.ratio if cfg.ratio is not None else ratio_for_target_macs(model, example, cfg, left)
    pruner = _pruner(model, example, cfg, ratio, left)
    steps = []
    for step in range(cfg.steps):
        if cfg.importance == "taylor":
            _accumulate_gradients(model, splits, train.batch_size)
        _step(pruner, model)
        finetune(
            model,
            splits,
            cfg.finetune_epochs,
            cfg.lr,
            train,
            train.seed + step,
            f"prune step {step + 1}/{cfg.steps}",
            **recovery,
        )
        now = footprint(model, example)
        steps.append(
            {
                "step": step + 1,
                **asdict(now),
                "val_accuracy": accuracy(model, splits.x("val"), splits.y("val")),
            }
        )
    after = footprint(model, example)
    report = {
        "method": "structured",
        "importance": cfg.importance,
        "recover": cfg.recover,
        "channel_ratio": ratio,
        "before": asdict(before),
        "after": asdict(after),
        "macs_reduction": before.macs / after.macs,
        "steps": steps,
        # what was left alone, and why: so a user sees what the ratio did not reach
        "left_alone": [
            *({"layer": n, "reason": "compression.prune.ignore"} for n in ignored_names(teacher, cfg)),
            *(
                {"layer": n, "reason": f"the pruner cannot remove its channels ({why})"}
                for n, why in left.items()
            ),
            *(
                {"layer": n, "reason": "recurrent layer: its hidden size is not pruned"}
                for n in recurrent(teacher)
            ),
        ],
        "heads": heads.counts(model),
    }
    return model.eval(), report


def recurrent(model: nn.Module) -> list[str]:
    """The recurrent layers (RNN, GRU, LSTM): Torch-Pruning leaves their hidden size as it is."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]


def unstructured_prune(
    teacher: nn.Module,
    splits: Splits,
    cfg: PruneParams,
    train: TrainParams,
    reference: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """Zero the smallest ``cfg.ratio`` of all conv/linear weights (global L1), fine-tune, make permanent.

    Shrinks nothing by itself: the tensors keep their shapes, so the ONNX file and the
    latency stay those of the dense model.
    """
    model = copy.deepcopy(teacher)
    example = splits.example()
    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=cfg.ratio)
    recovery = _recovery(cfg, reference if reference is not None else teacher, splits)
    finetune(
        model, splits, cfg.finetune_epochs, cfg.lr, train, train.seed, "unstructured fine-tune", **recovery
    )
    for module, name in targets:
        torch_prune.remove(module, name)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    total = sum(m.weight.numel() for m, _ in targets)
    fp = footprint(model, example)
    report = {
        "method": "unstructured",
        "sparsity": zeros / total,
        "before": asdict(footprint(teacher, example)),
        "after": asdict(fp),
        "note": "weights zeroed, shapes unchanged: no smaller or faster without sparse storage",
    }
    return model.eval(), report


PRUNERS = {"structured": structured_prune, "unstructured": unstructured_prune}


def prune(
    teacher: nn.Module,
    splits: Splits,
    cfg: PruneParams,
    train: TrainParams,
    reference: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """Run the pruning method named by ``cfg.method``; disabled pruning returns a copy. ``reference``:
    the model whose soft targets ``recover: teacher`` learns (default: the model being pruned)."""
    if not cfg.enabled:
        fp = asdict(footprint(teacher, splits.example()))
        return copy.deepcopy(teacher).eval(), {"method": "none", "before": fp, "after": fp}
    return PRUNERS[cfg.method](teacher, splits, cfg, train, reference)


def apply(module: nn.Module, params: PruneParams, ctx: Context) -> tuple[nn.Module, dict]:
    try:
        return prune(module, ctx.splits, params, ctx.train, ctx.teacher)
    except PruneError as exc:  # nothing of this model can be pruned: the stage passes it on, saying why
        rnn = recurrent(module)
        why = f"{exc}{'; recurrent layers: ' + ', '.join(rnn) if rnn else ''}"
        pass_on("prune", params, why, instead="compression.prune.ignore")
        fp = asdict(footprint(module, ctx.splits.example()))
        left = [{"layer": n, "reason": "recurrent layer: its hidden size is not pruned"} for n in rnn]
        report = {"method": "none", "skipped": str(exc), "before": fp, "after": fp, "left_alone": left}
        return copy.deepcopy(module).eval(), report


register(
    Technique("prune", PruneParams, apply, output="pruned_module", report="prune_report", stage="pruned"),
    position=20,
)
