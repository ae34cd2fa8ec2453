"""A seeded, perturbed copy of the test split: accuracy under input the model never saw clean.

Compression can keep clean accuracy and still lose margin: INT8 noise and removed channels
show up first on slightly shifted or noisy inputs. The perturbations are ``data.perturb``'s
(the same that ``compression.distill.augment`` trains on); the copy is the same on every run.
The gate judges the configured severity; ``severities`` draw the curve around it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, PositiveFloat

from kedro_edge.data.perturb import PerturbationParams, at_severity, perturbed
from kedro_edge.data.preprocessing import Preprocessing
from kedro_edge.data.store import StoredImages, map_blocks


class RobustnessParams(PerturbationParams):
    """The seeded perturbed copy of the test split (``kedro_edge.evaluation.robustness``)."""

    # multiples of the configured perturbation each stage is evaluated at (robustness_curve.json)
    severities: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)


def perturbed_copy(
    x: np.ndarray | StoredImages,
    cfg: PerturbationParams,
    contract: Preprocessing | None = None,
    severity: float = 1.0,
) -> np.ndarray | StoredImages:
    """The perturbations of ``cfg``, scaled by ``severity``, applied in order to a copy of ``x``:
    a lazy view of a store (perturbed a block at a time as it is read), or an array with the
    same values. Block ``b`` draws from seed ``(cfg.seed, b)``, whatever reads it."""
    scaled = at_severity(cfg, severity) if severity != 1.0 else cfg
    return map_blocks(x, lambda block, b: perturbed(block, scaled, contract, seed=(cfg.seed, b)))
