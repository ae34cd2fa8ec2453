"""Kedro hooks: validate all parameters before any node runs; report user errors in one line."""

from __future__ import annotations

import sys
from types import TracebackType

from kedro.framework.hooks import hook_impl

from kedro_edge.config import validate_parameters
from kedro_edge.errors import KedroEdgeError


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


class EdgeHooks:
    """Register in ``settings.py``: ``HOOKS = (EdgeHooks(),)``."""

    @hook_impl
    def after_context_created(self, context) -> None:
        # A user error (bad key, bad file, refused gate) ends `kedro run` with one line
        # naming the key/file/gate instead of a traceback; the exit code stays 1.
        if not getattr(sys.excepthook, "kedro_edge", False):
            sys.excepthook = _one_line_excepthook(sys.excepthook)
        validate_parameters(context.params)
