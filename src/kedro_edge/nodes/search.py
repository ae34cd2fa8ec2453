"""Search nodes: the budgeted search (or the recipe as configured) -> the compression plan."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import nn

from kedro_edge import config, data
from kedro_edge.compress import registry
from kedro_edge.errors import ConfigError, SearchError
from kedro_edge.fleet.inventory import Fleet
from kedro_edge.models.sources import TeacherSource
from kedro_edge.runtimes.graph_teacher import is_graph_only
from kedro_edge.search.space import without_search


def _search(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    fleet: Fleet | None,
    compression: dict,
    training: dict,
    validation: dict | None,
) -> tuple[dict[str, Any], Figure]:
    from kedro_edge.search import record
    from kedro_edge.search.driver import search

    cfg = config.parse(config.CompressionParams, compression, "compression")
    train = config.parse(config.TrainParams, training, "training")
    metric = config.parse(config.ValidationParams, validation, "validation").scorer
    result = search(teacher, data.Splits(model_input), cfg, train, fleet, metric)
    return result, record.figure(result)


def search_compression(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    fleet: Fleet,
    compression: dict,
    training: dict,
    validation: dict | None = None,
) -> tuple[dict[str, Any], Figure]:
    """With ``compression.search.enabled``, the search's record and Pareto plot; else a record
    saying it is off."""
    enabled = config.parse(config.CompressionParams, compression, "compression").search.enabled
    if enabled and is_graph_only(teacher):
        raise ConfigError(
            "parameter 'compression.search.enabled': the teacher is an ONNX graph and the search "
            "prunes a torch module: set it to false (static INT8 with mixed precision still applies)"
        )
    if not enabled:
        from kedro_edge.search import record

        off = record.disabled()
        return off, record.figure(off)
    return _search(teacher, model_input, fleet, compression, training, validation)


def run_search(
    teacher: nn.Module,
    model_input: dict[str, np.ndarray],
    fleet: Fleet,
    compression: dict,
    training: dict,
    validation: dict | None = None,
) -> tuple[dict[str, Any], Figure]:
    """The search, whatever ``compression.search.enabled`` says (``kedro run --pipelines search``);
    trials are judged by ``validation.metric``."""
    return _search(teacher, model_input, fleet, compression, training, validation)


def plan_compression(
    search_record: dict[str, Any], compression: dict, teacher_source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The compression parameters the rest of the pipeline runs: the chosen trial's recipe, or the
    configured one when the search is off. No candidate within budget stops the run here, before
    any model is replaced. A teacher known only as a graph gets the techniques that work on one;
    each other one is switched off with a line saying why, or stops the run if it is ``required``."""
    cfg = config.parse(config.CompressionParams, compression, "compression")
    source = TeacherSource.model_validate(teacher_source or {"kind": "trained"})
    if source.kind.graph_only:
        plan = without_search(cfg)
        recipe, off = registry.for_graph_teacher(plan, f"{source.kind.value} {source.path}")
        for name, why in off.items():
            registry.pass_on(name, getattr(plan, name), why)
        return recipe.model_dump(mode="json")
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
            f"compression.search: no candidate within the budget of {cfg.search.budget.limit} "
            f"validation points in {len(search_record['trials'])} trials{closest} "
            "(every trial is in data/08_reporting/search.json; model.onnx is unchanged)"
        )
    return config.parse(config.CompressionParams, chosen["recipe"], "compression").model_dump(mode="json")
