"""Test helpers for kedro-edge users and its own tests: a loopback SSH fleet of real sshd.

``LoopbackFleet`` runs one OpenSSH server per device on 127.0.0.2, 127.0.0.3, ... and writes the
fleet's ``devices.yml``; ``start_fleet`` returns one started. ``kedro_edge.testing.fleet``
shows the pytest fixture to write with it, and is also a CLI (``python -m kedro_edge.testing.fleet``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FleetError", "LoopbackFleet", "start_fleet"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m kedro_edge.testing.fleet` doesn't find the module already imported.
    if name in __all__:
        from kedro_edge.testing import fleet

        return getattr(fleet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
