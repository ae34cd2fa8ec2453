"""The pipelines as factories: a project's ``pipeline_registry.py`` calls these.

The compression and validation pipelines are built from ``kedro_edge.compress.registry``: one
node per registered technique, in recipe order, and every technique's module a validation input.
"""

from kedro_edge.pipelines.compression import create_compression_pipeline
from kedro_edge.pipelines.deployment import create_deployment_pipeline
from kedro_edge.pipelines.training import create_training_pipeline
from kedro_edge.pipelines.validation import create_validation_pipeline

__all__ = [
    "create_compression_pipeline",
    "create_deployment_pipeline",
    "create_training_pipeline",
    "create_validation_pipeline",
]
