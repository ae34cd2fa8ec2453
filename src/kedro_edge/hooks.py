"""Kedro hooks: validate all parameters before any node runs; report user errors in one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import TracebackType

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from rich.console import Console

from kedro_edge import config
from kedro_edge.config import validate_parameters
from kedro_edge.errors import KedroEdgeError
from kedro_edge.param_sources import ParamSources, catalog_overrides

logger = logging.getLogger(__name__)


def user_error(exc: BaseException) -> str | None:
    """The one-line message if ``exc`` is, or wraps, a ``KedroEdgeError``; else None.

    Kedro re-raises dataset errors as ``DatasetError(f"{name}: {error}")``: that outer
    message adds the catalog entry's name, so it is kept when it contains ours.
    """
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KedroEdgeError):
            inner, outer = str(cause), str(exc)
            return outer if inner in outer and "\n" not in outer else inner
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _one_line_excepthook(previous):
    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        message = user_error(exc)
        if message is not None:
            print(f"kedro-edge: error: {message}", file=sys.stderr)
        else:
            previous(kind, exc, tb)

    hook.kedro_edge = True
    return hook


def _replace_stale_kwargs(context, sources: ParamSources) -> None:
    """Give a switched ``class_path`` only its own ``kwargs`` (``ParamSources.replace_stale_kwargs``).

    Parameters set on the config loader bypass its files (Kedro's documented override), so
    ``context.params``, the ``params:`` catalog entries and so every node see the result.
    """
    loader = context.config_loader
    try:
        params = loader["parameters"]
    except MissingConfigException:
        return
    fixed, notes = sources.replace_stale_kwargs(params)
    if not notes:
        return
    loader["parameters"] = fixed
    if getattr(context, "_validated_params_cache", None) is not None:
        context._validated_params_cache = None  # another plugin's hook read context.params already
    for note in notes:
        logger.warning(note)  # Kedro shows only warnings from loggers outside its own


def _say_overrides(context, sources: ParamSources) -> None:
    """One line when the run differs from conf/base: DVC's params are conf/base's alone, so under
    ``dvc repro`` such a run's outputs are locked as if conf/base had made them."""
    loader = context.config_loader
    env = getattr(loader, "env", None) or getattr(loader, "default_run_env", None) or "local"
    conf = Path(str(getattr(loader, "conf_source", "conf")))
    found = sources.overrides()
    if conf.is_dir():
        found += catalog_overrides(conf, env, Path(context.project_path), getattr(loader, "base_env", "base"))
    if not found:
        return
    stage = os.environ.get("DVC_STAGE")
    where = f"dvc repro stage '{stage}' runs" if stage else "this run uses"
    logger.warning(
        f"{where} settings conf/base does not have (dvc.yaml's params are conf/base's; the model's "
        f"version record lists them): {', '.join(found)}"
    )


class EdgeHooks:
    """Register in ``settings.py``: ``HOOKS = (EdgeHooks(),)``."""

    _stage_metrics: dict | None = None  # this run's evaluate_models output, for the closing table

    @hook_impl
    def after_context_created(self, context) -> None:
        # A user error (bad key, bad file, refused gate) ends `kedro run` with one line
        # naming the key/file/gate instead of a traceback; the exit code stays 1.
        if not getattr(sys.excepthook, "kedro_edge", False):
            sys.excepthook = _one_line_excepthook(sys.excepthook)
        # which file (or --params) set each key: errors name it, and a switched class_path
        # drops the kwargs that were written for the class it replaced
        sources = ParamSources.from_loader(context.config_loader, context.project_path)
        _replace_stale_kwargs(context, sources)
        validate_parameters(context.params, sources)
        _say_overrides(context, sources)

    @hook_impl
    def before_pipeline_run(self, pipeline, catalog) -> None:
        # A model class that cannot be imported (a typo, the user's module failing to import)
        # stops the run before any node has replaced an artifact.
        inputs = pipeline.inputs()
        specs = []
        if "params:model" in inputs:
            model = catalog.get("params:model").load()  # not catalog.load: no "Loading data" log line
            specs.append((config.parse(config.TeacherSpec, model, "model"), "model"))
        if "params:compression" in inputs:
            compression = catalog.get("params:compression").load()
            distill = config.parse(config.CompressionParams, compression, "compression").distill
            if distill.enabled and distill.student is not None:
                specs.append((distill.student, "compression.distill.student"))
        if specs:
            from kedro_edge.models import import_class  # torch loads only when a model is needed

            for spec, key in specs:
                import_class(spec.class_path, f"{key}.class_path")

    @hook_impl
    def after_node_run(self, node, outputs) -> None:
        # keep the stage figures of this run (not a stale file) for the closing table
        if node.name == "evaluate_models":
            self._stage_metrics = outputs.get("compression_metrics")

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._print_stage_table()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._print_stage_table()  # a refused gate: the figures that refused it

    def _print_stage_table(self) -> None:
        metrics = self._stage_metrics
        if metrics:
            # torch and ORT load only when there is a table
            from kedro_edge.evaluation.records import CompressionMetrics
            from kedro_edge.evaluation.report import summary_table

            console = Console()
            console.width = max(console.width, 140)  # logs and CI have 80 columns: don't fold the figures
            console.print(summary_table(CompressionMetrics.from_json(metrics)))
            self._stage_metrics = None
