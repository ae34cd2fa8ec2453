"""kedro-edge: compress a PyTorch model into a small INT8 ONNX model, then prove it on a fleet.

The root holds the Kedro-facing surface (``config``, ``errors``, ``hooks``, ``cli``); the work is
in layers, each importing only those below it (import-linter checks them, pyproject.toml):
``pipelines`` (factories) > ``nodes`` > ``io`` and ``lineage`` > ``search`` > ``fleet`` >
``evaluation`` > ``compress`` > ``runtimes`` > ``models`` > ``data``. ``bench`` runs on the device.
"""

from kedro_edge.errors import ConfigError, DataError, GateError, KedroEdgeError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GateError", "KedroEdgeError", "__version__"]
