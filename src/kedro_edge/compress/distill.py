"""Knowledge distillation: the student learns the teacher's soft targets (Hinton et al., 2015).

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T grows. The
loss follows the task (``kedro_edge.data.task``): per-pixel soft targets averaged over the pixels
for dense outputs, MSE to the teacher's outputs for regression.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kedro_edge.compress.quantize import prepare_qat
from kedro_edge.compress.registry import Context, Technique, TechniqueParams, register
from kedro_edge.data import Splits, calibration_samples
from kedro_edge.data.perturb import AugmentParams, augment_batch
from kedro_edge.data.task import Task
from kedro_edge.models.factory import ModelSpec, build_model
from kedro_edge.models.training import FitResult, LossFn, TrainParams, fit, predict


class DistillParams(TechniqueParams):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)  # weight of the soft-target term
    epochs: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    patience: int = Field(4, ge=1)
    student: ModelSpec | None = None  # a smaller architecture instead of the pruned teacher
    # train on perturbed inputs (the kinds validation.robustness tests): off as shipped
    augment: AugmentParams = AugmentParams()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    task: Task = Task.CLASSIFICATION,
) -> torch.Tensor:
    """The documented loss above, batch-mean (and pixel-mean for dense outputs)."""
    soft = task.soft_loss(student_logits, teacher_logits, temperature)
    return alpha * soft + (1 - alpha) * task.loss(student_logits, labels)


def loss_of(cfg: DistillParams, task: Task = Task.CLASSIFICATION) -> LossFn:
    """``fit``'s loss for ``cfg``: its targets are the teacher's logits for the batch."""

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, targets, labels, cfg.temperature, cfg.alpha, task)

    return loss_fn


def distill(
    student: nn.Module, teacher: nn.Module, splits: Splits, cfg: DistillParams, train: TrainParams
) -> FitResult:
    """Train ``student`` in place against the frozen ``teacher``'s soft targets.

    Without augmentation the teacher's logits are computed once for the training split (in the
    training's precision: bfloat16 where the CPU runs it natively): each epoch then costs the
    student's passes only. With ``augment`` a share of every batch is
    perturbed and the teacher is asked again about the images the student actually sees.
    """
    common = {
        "epochs": cfg.epochs,
        "batch_size": train.batch_size,
        "lr": cfg.lr,
        "weight_decay": train.weight_decay,
        "patience": cfg.patience,
        "seed": train.seed,
        "loss_fn": loss_of(cfg, splits.task),
        "precision": train.precision,
        "schedule": train.schedule,
    }
    if not cfg.augment.enabled:
        return fit(
            student,
            splits,
            **common,
            description="distill",
            targets=predict(teacher, splits.x("train"), precision=train.precision),
        )
    teacher.eval()
    return fit(
        student,
        splits,
        **common,
        description="distill (augmented)",
        augment=lambda x, rng: augment_batch(x, cfg.augment, splits.preprocessing, rng),
        target_fn=teacher,
    )


def apply(module: nn.Module, params: DistillParams, ctx: Context) -> tuple[nn.Module, None]:
    """Fine-tune the (quantization-aware) student on the teacher's soft targets.

    With ``distill.student`` set, a fresh student of that architecture is trained instead of the
    one it is given (made quantization-aware when the recipe quantizes). Disabled: the student
    passes through untouched, and the INT8 export is plain post-training quantization.
    """
    if not params.enabled:
        return module, None
    if params.student is not None:
        splits = ctx.splits
        module = build_model(
            params.student, splits.input_shape, splits.num_classes, key="compression.distill.student"
        )
        quantize_params = ctx.recipe.quantize
        if quantize_params.enabled:
            calib = calibration_samples(splits, quantize_params.calibration_samples)
            module = prepare_qat(module, calib)
    distill(module, ctx.teacher, ctx.splits, params, ctx.train)
    return module, None


register(Technique("distill", DistillParams, apply, output="student_module", stage="distilled"), position=40)
