"""kedro-edge: compress a PyTorch model into a small INT8 ONNX model, then prove it on a fleet.

The package is layered: ``data``/``models``/``training`` and ``compress`` do the work,
``export`` and ``evaluate`` turn modules into ONNX and figures, ``gate`` judges figures,
``io`` holds the Kedro datasets, and ``nodes`` adapts all of it to Kedro pipelines.
"""

from kedro_edge.errors import ConfigError, DataError, GateError, KedroEdgeError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "GateError", "KedroEdgeError", "__version__"]
