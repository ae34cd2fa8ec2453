"""Search nodes: the budgeted search (or the recipe as configured) -> the compression plan."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from kedro_edge import config, data
from kedro_edge.errors import SearchError
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.search.space import without_search


def _search(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    fleet: Fleet | None,
    compression: dict,
    training: dict,
) -> tuple[dict[str, Any], Figure]:
    from kedro_edge.search import record
    from kedro_edge.search.driver import search

    cfg = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    result = search(teacher, data.Splits(model_input), cfg, train, fleet)
    return result, record.figure(result)


def search_compression(
    teacher: nn.Module, model_input: dict[str, np.ndarray], fleet: Fleet, compression: dict, training: dict
) -> tuple[dict[str, Any], Figure]:
    """With ``compression.search.enabled``, the search's record and Pareto plot; else a record
    saying it is off."""
    if not config.parse(config.CompressionParams, compression, "compression").search.enabled:
        from kedro_edge.search import record

        off = record.disabled()
        return off, record.figure(off)
    return _search(teacher, model_input, fleet, compression, training)


def run_search(
    teacher: nn.Module, model_input: dict[str, np.ndarray], fleet: Fleet, compression: dict, training: dict
) -> tuple[dict[str, Any], Figure]:
    """The search, whatever ``compression.search.enabled`` says (``kedro run --pipelines search``)."""
    return _search(teacher, model_input, fleet, compression, training)


def plan_compression(search_record: dict[str, Any], compression: dict) -> dict[str, Any]:
    """The compression parameters the rest of the pipeline runs: the chosen trial's recipe, or the
    configured one when the search is off. No candidate within budget stops the run here, before
    any model is replaced."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    if not search_record.get("enabled"):
        return without_search(cfg).model_dump(mode="json")
    chosen = search_record.get("chosen")
    if chosen is None:
        done = [t for t in search_record["trials"] if t["val_drop_points"] is not None]
        best = min(done, key=lambda t: t["val_drop_points"], default=None)
        closest = (
            f"; the closest was trial #{best['number']}, {best['val_drop_points']:.2f} points below"
            if best
            else ""
        )
        raise SearchError(
            f"compression.search: no candidate within the budget of {cfg.search.budget.max_accuracy_drop} "
            f"validation points in {len(search_record['trials'])} trials{closest} "
            "(every trial is in data/08_reporting/search.json; model.onnx is unchanged)"
        )
    return config.parse(config.CompressionParams, chosen["recipe"], "compression").model_dump(mode="json")
