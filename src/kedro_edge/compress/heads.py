"""Attention under pruning: whole heads go, and each attention module's head count follows.

Torch-Pruning prunes the query/key/value projection of an attention module head by head when
told each one's head count (``num_heads``); the module's own ``num_heads`` / ``head_dim`` (and
timm's ``attn_dim``), which its forward reshapes with, must then be set to what is left. An
attention module here is any module with a ``qkv`` Linear and an integer ``num_heads`` (timm's
``Attention`` and models written like it); the embedding width (the residual stream) is kept.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def qkv_out(attention: nn.Module) -> nn.Linear | None:
    """The Linear whose outputs are the queries, keys and values: ``qkv`` itself, or its last
    Linear once low-rank factorised it into a Sequential."""
    qkv = getattr(attention, "qkv", None)
    if isinstance(qkv, nn.Sequential):
        qkv = next((m for m in reversed(qkv) if isinstance(m, nn.Linear)), None)
    return qkv if isinstance(qkv, nn.Linear) else None


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if qkv_out(m) is not None and isinstance(getattr(m, "num_heads", None), int)
    ]


def pruner_kwargs(model: nn.Module, ratio: float) -> dict[str, Any]:
    """Torch-Pruning's arguments that remove whole heads at ``ratio`` (none without attention)."""
    found = attention_modules(model)
    if not found:
        return {}
    return {
        "num_heads": {qkv_out(m): m.num_heads for _, m in found},
        "prune_num_heads": True,
        "prune_head_dims": False,
        "head_pruning_ratio": ratio,
    }


def sync(model: nn.Module, pruner: Any) -> None:
    """Each attention module's head count and sizes, after ``pruner`` removed heads."""
    counts = getattr(pruner, "num_heads", {}) or {}
    for _, m in attention_modules(model):
        qkv = qkv_out(m)
        if qkv in counts:
            m.num_heads = int(counts[qkv])
        m.head_dim = qkv.out_features // (3 * m.num_heads)
        if hasattr(m, "attn_dim"):
            m.attn_dim = m.num_heads * m.head_dim


def counts(model: nn.Module) -> dict[str, int]:
    """Heads per attention module, by name (prune_report.json)."""
    return {name: m.num_heads for name, m in attention_modules(model)}
