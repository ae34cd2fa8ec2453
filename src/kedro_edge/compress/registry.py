"""The ordered registry of compression techniques: the one place the recipe is written down.

Each technique is one module holding its parameter model and an ``apply``, and registers itself
once, at a position. Everything that walks the recipe reads it from here: the compression
pipeline's nodes (``kedro_edge.pipelines``), the ``compression:`` parameter section
(``kedro_edge.search.params.CompressionParams``), validation's list of stages, the stage table,
the gates and the search's recipe. Adding a technique is one module and one ``register`` call
(Torch-Pruning's strategy style: small classes chosen by name, not ``if`` ladders).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from kedro_edge.data import Splits
from kedro_edge.errors import RequiredStageError
from kedro_edge.models.training import TrainParams
from kedro_edge.schema import Strict

log = logging.getLogger(__name__)

# the stage every other is compared with: the FP32 teacher, as teacher.onnx
REFERENCE = "teacher"
REFERENCE_MODULE = "teacher_module"


@dataclass(frozen=True)
class Context:
    """What a technique may read besides the module it changes and its own parameters."""

    splits: Splits
    train: TrainParams
    recipe: Any  # the whole ``compression`` section (``CompressionParams``): other techniques' settings
    teacher: nn.Module  # the FP32 teacher (distillation's soft targets)


class TechniqueParams(Strict):
    """What every technique's section (``compression.<name>``) has: whether it runs, and whether
    the run may go on without it."""

    enabled: bool = True
    # true: an architecture this stage cannot take stops the run instead of passing through it
    required: bool = False


# (module, its own parameter section, context) -> (the new module, a report or None)
Apply = Callable[[nn.Module, Any, Context], tuple[nn.Module, "dict | None"]]


@dataclass(frozen=True)
class Technique:
    """One step of the recipe.

    Attributes:
        name: its parameter section (``compression.<name>``) and its node's name.
        params: the pydantic model of that section (a ``TechniqueParams``: ``enabled``, ``required``).
        apply: the step itself; a disabled technique returns the module (or a copy) unchanged.
        output: the catalog dataset of the module it makes.
        report: the catalog dataset of its report, or None when it writes none.
        stage: its row in the stage table, or None (a step whose effect shows only later).
        row: ``"module"``: the row is its output module, exported as float ONNX; ``"int8"``: the row
            is the exported INT8 graph (model.onnx), judged against the last module, and comes last.
        graph: it also applies to a graph-only teacher (an ONNX file): its ``apply`` passes such a
            teacher through and its effect is in the ONNX export. Others are switched off for one.
    """

    name: str
    params: type[BaseModel]
    apply: Apply
    output: str
    report: str | None = None
    stage: str | None = None
    row: str = "module"
    graph: bool = False
    position: float = field(default=0.0, compare=False)


_TECHNIQUES: dict[str, Technique] = {}
_LISTENERS: list[Callable[[], None]] = []


def register(technique: Technique, position: float) -> Technique:
    """Add ``technique`` at ``position`` (built-ins: 10, 20, ... so one can go between two)."""
    if technique.row not in ("module", "int8"):
        raise ValueError(f"technique {technique.name!r}: row must be 'module' or 'int8'")
    if not issubclass(technique.params, TechniqueParams):
        raise ValueError(f"technique {technique.name!r}: its parameters must subclass TechniqueParams")
    _TECHNIQUES[technique.name] = Technique(**{**technique.__dict__, "position": position})
    for listener in _LISTENERS:
        listener()
    return technique


def unregister(name: str) -> None:
    """Remove a technique (a test's throw-away one)."""
    _TECHNIQUES.pop(name)
    for listener in _LISTENERS:
        listener()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the registry changes (the parameter model rebuilds itself)."""
    _LISTENERS.append(listener)


def techniques() -> list[Technique]:
    """Every registered technique, in recipe order."""
    return sorted(_TECHNIQUES.values(), key=lambda t: t.position)


def get(name: str) -> Technique:
    try:
        return _TECHNIQUES[name]
    except KeyError:
        known = ", ".join(t.name for t in techniques())
        raise ValueError(f"no compression technique {name!r} (known: {known})") from None


def last_output() -> str:
    """The catalog dataset of the recipe's last module: what model.onnx is exported from."""
    return techniques()[-1].output


def stages(recipe: Any) -> list[Technique]:
    """The techniques that add a row to the stage table under ``recipe``, in table order: each
    enabled one with a stage, module rows first, then the INT8 graph's."""
    rows = [t for t in techniques() if t.stage is not None and getattr(recipe, t.name).enabled]
    return [t for t in rows if t.row == "module"] + [t for t in rows if t.row == "int8"]


def for_graph_teacher(recipe: Any, origin: str) -> tuple[Any, dict[str, str]]:
    """``recipe`` with every enabled technique that rewrites a torch module switched off, and why
    each was, by name: what a teacher known only as an ONNX graph (``origin``, e.g. ``onnx
    mine.onnx``) can have.

    Raises:
        RequiredStageError: one of them is ``required``.
    """
    off = {
        t.name: f"the teacher is a graph ({origin}) and {t.name} rewrites a torch module"
        for t in techniques()
        if not t.graph and getattr(recipe, t.name).enabled
    }
    for name, why in off.items():
        stop_if_required(name, getattr(recipe, name), why)
    update = {name: getattr(recipe, name).model_copy(update={"enabled": False}) for name in off}
    return recipe.model_copy(update=update), off


def stop_if_required(name: str, params: Any, why: str, instead: str | None = None) -> None:
    """Stop the run when technique ``name`` cannot take the architecture (``why``) and its section
    says ``required: true``: one line naming the setting to change (and ``instead``, another
    setting that would let the stage apply).

    Raises:
        RequiredStageError: ``params.required`` is true.
    """
    if params.required:
        other = f", or {instead}" if instead else ""
        raise RequiredStageError(
            f"compression.{name}.required: true but {name} cannot take this architecture: "
            f"{' '.join(why.split())} (set compression.{name}.required: false to pass it on{other})"
        )


def pass_on(name: str, params: Any, why: str, instead: str | None = None) -> None:
    """Say in one line that technique ``name`` passes the module on unchanged because of ``why``,
    or stop the run if it is required (``stop_if_required``)."""
    stop_if_required(name, params, why, instead)
    log.warning("compression.%s: skipped: %s; set compression.%s.enabled: false", name, why, name)


def stage_names(recipe: Any) -> list[str]:
    """The stage table's rows under ``recipe``: the reference, then each technique's."""
    return [REFERENCE, *(t.stage for t in stages(recipe))]
