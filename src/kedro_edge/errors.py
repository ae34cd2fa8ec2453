"""The one error hierarchy of kedro-edge.

Every error a user can cause (bad parameters, bad data, a refused gate) is a
``KedroEdgeError`` whose message is one line naming the key, file or device; ``hooks``
prints exactly that line instead of a traceback.
"""

from kedro.io import DatasetError


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line (at most ``limit`` characters), or its type: what a one-line
    error quotes of the library or user code that failed under it."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class KedroEdgeError(Exception):
    """Base class: a user-facing failure with a one-line message."""


class ConfigError(KedroEdgeError, ValueError):
    """A parameter or configuration key is missing, unknown or out of range."""


class RequiredStageError(ConfigError):
    """A compression stage set ``required: true`` cannot take the model's architecture."""


class DataError(KedroEdgeError, DatasetError):
    """A data file is missing, unreadable, or holds arrays of the wrong shape or dtype.

    It is a ``DatasetError`` too, so Kedro re-raises it from a dataset's ``load`` unchanged.
    """


class GateError(KedroEdgeError):
    """A release gate refused the artifact; the figures were written before this is raised."""


class SearchError(KedroEdgeError):
    """No candidate met the budget; the record was written before this is raised."""


class RecordError(KedroEdgeError, ValueError):
    """A JSON record (a report the pipeline wrote) misses a key, has an unknown one or a bad value."""
