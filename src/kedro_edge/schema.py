"""The base of every parameter model, and the parser whose errors name the key and the file.

Unknown keys are refused (``extra="forbid"``) so a typo never silently falls back to a default.
Each layer owns the models of its own parameters; ``kedro_edge.config`` gathers them per section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kedro_edge.errors import ConfigError

# top-level parameter key -> the conf/base file it normally lives in
SECTION_FILES = {
    "data": "parameters_training.yml",
    "model": "parameters_training.yml",
    "training": "parameters_training.yml",
    "compression": "parameters_compression.yml",
    "validation": "parameters_validation.yml",
    "deployment": "parameters_deployment.yml",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


class Sources(Protocol):
    """Where a parameter came from (``kedro_edge.param_sources.ParamSources``)."""

    def where(self, path: Sequence[str]) -> str | None: ...


def parse(model: type[M], raw: Any, key: str, sources: Sources | None = None) -> M:
    """Validate ``raw`` against ``model``; raise ``ConfigError`` naming the first bad key.

    ``sources`` names the file (or ``--params``) that set the bad key; without it the message
    names the conf/base file the section conventionally lives in.
    """
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, key, sources)) from None


def _one_line(exc: ValidationError, key: str, sources: Sources | None = None) -> str:
    err = exc.errors()[0]
    path = [*key.split("."), *(str(p) for p in err["loc"])]
    where = sources.where(path) if sources is not None else None
    if where is None:
        where = f"conf/base/{SECTION_FILES.get(path[0], 'parameters')}"
    dotted = ".".join(path)
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown parameter key '{dotted}'"
    if err["type"] == "value_error":  # a validator's own sentence: without pydantic's prefix
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        if message.startswith("parameter '"):  # it names its key already (e.g. validation.metric)
            return f"{where}: {message}"
        got = f" (got {err['input']!r})" if err["loc"] else ""  # not a whole section's dump
        return f"{where}: parameter '{dotted}': {message}{got}"
    got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
    return f"{where}: parameter '{dotted}': {err['msg']}{got}"
