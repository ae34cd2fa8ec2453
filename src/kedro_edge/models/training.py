"""One training loop for every stage that trains: teacher, pruning fine-tune, distillation.

Seeded (same seed, same weights), early stopping on the task's validation score (top-1 accuracy,
mean IoU for masks: ``kedro_edge.data.task``) with the best weights restored, and a rich progress
bar per call. The loss is the task's unless a stage gives its own (distillation).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from kedro_edge.data import Splits, batches
from kedro_edge.data.task import Task, task_of
from kedro_edge.progress import progress_bar
from kedro_edge.schema import Strict


class TrainParams(Strict):
    seed: int = 0
    # auto: bfloat16 autocast where the CPU runs it natively (AVX-512 BF16 or AMX), else float32
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)  # onecycle: the peak
    # onecycle: per batch, warm up over the first 15% of steps, then cosine to ~0 (fewer epochs
    # reach the accuracy more epochs of the per-epoch cosine do: README); cosine: per epoch from lr
    schedule: Literal["onecycle", "cosine"] = "cosine"
    weight_decay: float = Field(5e-4, ge=0)
    patience: int = Field(5, ge=1)  # epochs without a better validation accuracy before stopping


# (student logits, labels, inputs or the rows of fit's ``targets``) -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# (a training batch, the epoch's generator) -> the batch as trained on
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


Precision = Literal["auto", "float32", "bfloat16"]
Schedule = Literal["onecycle", "cosine"]
WARMUP = 0.15  # onecycle: share of the steps spent rising to the peak learning rate


@functools.cache
def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 matrix work natively (AVX-512 BF16 or AMX), so autocast pays."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _autocast(model: nn.Module, precision: Precision) -> bool:
    """bfloat16 autocast for this model? Quantization-aware models too: their observers and
    fake-quant grid work in float32 (``ActivationFakeQuant``), the convolutions in bfloat16."""
    if precision == "float32":
        return False
    return precision == "bfloat16" or bf16_native()


@dataclass
class FitResult:
    best_val_accuracy: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict(
    model: nn.Module, x: np.ndarray, batch_size: int = 256, precision: Precision = "float32"
) -> np.ndarray:
    """Outputs of ``model`` (eval mode) for ``x``, batched. Image batches run channels-last (the
    float32 results up to rounding, ~1.2x sooner on CPU); ``precision`` as ``fit``'s: float32 unless
    asked (a teacher's soft targets may use the training's bfloat16)."""
    model.eval()
    images = x.ndim == 4
    fmt = torch.channels_last if images else torch.contiguous_format
    bf16 = images and _autocast(model, precision)
    model.to(memory_format=fmt)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = [
                model(torch.from_numpy(x[i : i + batch_size]).contiguous(memory_format=fmt)).float()
                for i in range(0, len(x), batch_size)
            ]
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(out).contiguous().numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """The task's validation score of ``model`` (top-1 accuracy for class ids, mean IoU for masks)."""
    return task_of(y).score(predict(model, x), y)


def _score(model: nn.Module, x: np.ndarray, y: np.ndarray, task: Task) -> tuple[float, float]:
    """(the task's score, -loss): higher is better; the loss breaks ties once the score saturates."""
    outputs = predict(model, x)
    loss = task.loss(torch.from_numpy(outputs), torch.from_numpy(y)).item()
    return task.score(outputs, y), -loss


def fit(
    model: nn.Module,
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    description: str = "train",
    targets: np.ndarray | None = None,
    augment: Augment | None = None,
    target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: Precision = "auto",
    schedule: Schedule = "cosine",
) -> FitResult:
    """Train ``model`` in place (AdamW; ``schedule``: a one-cycle learning rate stepped per batch, or a
    cosine one per epoch); keep the best-validation weights.

    ``targets`` (one row per training sample, e.g. a teacher's logits computed once) is
    handed to ``loss_fn`` batch by batch in place of the inputs. ``augment`` changes each
    training batch (a generator seeded per epoch, so runs repeat); ``target_fn`` then computes
    the targets from the batch as trained on (a teacher's logits for the perturbed images).

    Image batches train channels-last, under bfloat16 autocast where ``precision`` allows
    (``_autocast``): weights, optimizer state and the loss stay float32, and the model is
    returned in the usual memory format. Validation scoring runs in float32.
    """
    torch.manual_seed(seed)
    kind = splits.task
    if loss_fn is None:
        loss_fn = lambda out, y, _: kind.loss(out, y)  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    x_val, y_val = splits.x("val"), splits.y("val")
    best, best_state, stale = _score(model, x_val, y_val, kind), copy.deepcopy(model.state_dict()), 0
    result = FitResult(best_val_accuracy=best[0], epochs_run=0)
    x_train = splits.x("train")
    per_batch = schedule == "onecycle"
    sched: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * -(-len(x_train) // batch_size), pct_start=WARMUP
        )
        if per_batch
        else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    )
    index = np.arange(len(x_train))  # batches of indices: ``targets`` rows follow the same order
    images = x_train.ndim == 4
    bf16 = images and _autocast(model, precision)
    fmt = torch.channels_last if images else torch.contiguous_format
    with progress_bar() as bar:
        task = bar.add_task(description, total=epochs, status=f"val {best[0]:.3f}")
        for epoch in range(epochs):
            model.train().to(memory_format=fmt)
            losses = []
            rng = np.random.default_rng([seed, epoch])
            for ib, yb in batches(index, splits.y("train"), batch_size, True, seed + epoch):
                x_np = x_train[ib.numpy()]
                xb = torch.from_numpy(x_np if augment is None else augment(x_np, rng))
                if target_fn is not None:
                    with torch.no_grad():
                        extra = target_fn(xb)
                else:
                    extra = xb if targets is None else torch.from_numpy(targets[ib.numpy()])
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(xb.contiguous(memory_format=fmt))
                loss = loss_fn(out.float(), yb, extra)
                loss.backward()
                opt.step()
                if per_batch:
                    sched.step()
                losses.append(loss.item())
            if not per_batch:
                sched.step()
            model.to(memory_format=torch.contiguous_format)
            score = _score(model, x_val, y_val, kind)
            val_acc = score[0]
            result.history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)),
                    "val_accuracy": val_acc,
                    "lr": opt.param_groups[0]["lr"],
                }
            )
            result.epochs_run = epoch + 1
            if score > best:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
            bar.update(task, advance=1, status=f"loss {np.mean(losses):.3f} val {val_acc:.3f}")
            if patience is not None and stale >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    result.best_val_accuracy = best[0]
    return result


def finetune(
    model: nn.Module,
    splits: Splits,
    epochs: int,
    lr: float,
    train: TrainParams,
    seed: int,
    description: str,
    loss_fn: LossFn | None = None,
    targets: np.ndarray | None = None,
) -> None:
    """Fine-tune ``model`` in place for ``epochs`` (none: unchanged) with the training split's batch
    size and weight decay: what every technique runs after it changes the model (``loss_fn`` and
    ``targets`` as in ``fit``: a teacher's soft targets instead of the labels)."""
    if epochs:
        fit(
            model,
            splits,
            epochs=epochs,
            batch_size=train.batch_size,
            lr=lr,
            weight_decay=train.weight_decay,
            seed=seed,
            description=description,
            loss_fn=loss_fn,
            targets=targets,
            precision=train.precision,
            schedule=train.schedule,
        )
