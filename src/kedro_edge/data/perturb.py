"""Seeded input perturbations: the robust test copy (``evaluation.robustness``) and training
augmentation (``compression.distill.augment``) draw from the same functions.

Each perturbation is a small function chosen by name; they apply in the listed order, each
with its own seeded generator. Images prepared by an input contract are perturbed as pixels
in [0, 1] (noise in the sensor's units, clipped where it saturates), then prepared again.
A *severity* scales every perturbation at once: ×2 is twice the noise and the contrast change
and twice the shift, so a curve over severities shows how fast a model's margin runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import numpy as np
from pydantic import Field

from kedro_edge.data.preprocessing import Preprocessing, normalise, to_unit
from kedro_edge.schema import Strict

MAX_SHIFT = 16


class PerturbationParams(Strict):
    """Whether to perturb, which perturbations, how strong, and their seed."""

    enabled: bool = True
    perturbations: list[Literal["noise", "shift", "contrast"]] = Field(
        default_factory=lambda: ["shift", "noise"], min_length=1
    )
    noise_std: float = Field(0.1, ge=0)  # Gaussian noise, in input units (images: [0, 1])
    max_shift: int = Field(2, ge=0, le=MAX_SHIFT)  # pixels, each image shifted by up to this in x and y
    contrast: float = Field(0.5, ge=0, lt=1)  # contrast scaled by a factor in [1 - contrast, 1]
    seed: int = 0


Perturbation = Callable[[np.ndarray, PerturbationParams, np.random.Generator], np.ndarray]


def _is_image(x: np.ndarray) -> bool:
    return x.ndim == 4


def gaussian_noise(x: np.ndarray, cfg: PerturbationParams, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, noise_std) per value; images stay in [0, 1] (a sensor saturates)."""
    noisy = x + rng.normal(0.0, cfg.noise_std, size=x.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0) if _is_image(x) else noisy


def shift(x: np.ndarray, cfg: PerturbationParams, rng: np.random.Generator) -> np.ndarray:
    """Translate each image by up to ``max_shift`` pixels in x and y (edges replicated).

    Feature vectors have no geometry: they pass through unchanged.
    """
    if not _is_image(x) or cfg.max_shift == 0:
        return x
    k = cfg.max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (k, k), (k, k)), mode="edge")
    offsets = rng.integers(-k, k + 1, size=(len(x), 2))
    h, w = x.shape[-2:]
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, k + dy : k + dy + h, k + dx : k + dx + w]
    return out


def contrast(x: np.ndarray, cfg: PerturbationParams, rng: np.random.Generator) -> np.ndarray:
    """Scale each image's contrast about its mean by a factor in [1 - contrast, 1]."""
    if not _is_image(x):
        return x
    factor = rng.uniform(1 - cfg.contrast, 1.0, size=(len(x), 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (mean + factor * (x - mean)).astype(np.float32)


PERTURBATIONS: dict[str, Perturbation] = {"noise": gaussian_noise, "shift": shift, "contrast": contrast}

P = TypeVar("P", bound=PerturbationParams)


def at_severity(cfg: P, severity: float) -> P:
    """``cfg`` with every perturbation scaled by ``severity`` (shift rounded to whole pixels)."""
    return cfg.model_copy(
        update={
            "noise_std": cfg.noise_std * severity,
            "max_shift": min(MAX_SHIFT, round(cfg.max_shift * severity)),
            "contrast": min(0.95, cfg.contrast * severity),
        }
    )


def perturbed(
    x: np.ndarray,
    cfg: PerturbationParams,
    contract: Preprocessing | None = None,
    seed: int | tuple[int, ...] | None = None,
) -> np.ndarray:
    """The perturbations of ``cfg`` applied in order to a float32 copy of ``x``; ``seed`` (default
    ``cfg.seed``) picks the draw, so the same seed gives the same copy on every run."""
    image_contract = contract if contract is not None and _is_image(x) else None
    out = np.array(x if image_contract is None else to_unit(x, image_contract), dtype=np.float32, copy=True)
    base = [cfg.seed] if seed is None else list(np.atleast_1d(seed).tolist())
    for i, name in enumerate(cfg.perturbations):
        out = PERTURBATIONS[name](out, cfg, np.random.default_rng([*base, i]))
    return (out if image_contract is None else normalise(out, image_contract)).astype(np.float32)


class AugmentParams(PerturbationParams):
    """Training on perturbed inputs (``compression.distill.augment``): a ``share`` of each batch
    is perturbed, a new draw every batch. Off by default; the same kinds as
    ``validation.robustness`` buy margin there, at some clean accuracy."""

    enabled: bool = False
    share: float = Field(0.5, gt=0, le=1)  # of each training batch


def augment_batch(
    x: np.ndarray, cfg: AugmentParams, contract: Preprocessing | None, rng: np.random.Generator
) -> np.ndarray:
    """``x`` with a random ``cfg.share`` of its rows perturbed (a fresh draw from ``rng``)."""
    rows = np.flatnonzero(rng.random(len(x)) < cfg.share)
    if not len(rows):
        return x
    out = np.array(x, dtype=np.float32, copy=True)
    out[rows] = perturbed(x[rows], cfg, contract, seed=int(rng.integers(2**31)))
    return out
