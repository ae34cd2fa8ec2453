"""Compression techniques, one module each, chosen by the name of their parameter section.

    lowrank.py          truncated-SVD factorisation of Linear and Conv layers
    prune.py            structured (channels removed) or unstructured pruning
    quantize.py         quantization-aware training (fake INT8 in torch)
    distill.py          knowledge distillation from the teacher
    cluster.py          per-layer k-means weight sharing (fewer bytes shipped)
    mixed_precision.py  which layers stay float in the INT8 graph

Nothing here knows about Kedro or the fleet; each technique takes and returns modules
(mixed precision: ONNX graphs).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

# the techniques that take and return a module: compression.<name> is applied by the function
# <name> of compress/<name>.py, (module, splits, params of that section, training params) ->
# (module, report). Imported when used, so importing compress.quantize (export.py does) does not
# load Torch-Pruning and scikit-learn.
TECHNIQUES = ("lowrank", "prune", "cluster")


def apply(name: str, module: nn.Module, splits: Any, compression: Any, train: Any) -> tuple[nn.Module, dict]:
    """Run technique ``name`` with ``compression.<name>``; a disabled one returns an unchanged copy."""
    if name not in TECHNIQUES:
        raise ValueError(f"no compression technique {name!r} (known: {', '.join(TECHNIQUES)})")
    technique = getattr(importlib.import_module(f"{__name__}.{name}"), name)
    return technique(module, splits, getattr(compression, name), train)
