"""Explicit registry: ``find_pipelines`` would look in ``pipelines.pipelines``. The pipelines
themselves are the plugin's factories (``kedro_edge.pipelines``)."""

from kedro.pipeline import Pipeline

from kedro_edge.pipelines import (
    create_compression_pipeline,
    create_deployment_pipeline,
    create_training_pipeline,
    create_validation_pipeline,
)


def register_pipelines() -> dict[str, Pipeline]:
    pipes = {
        "training": create_training_pipeline(),
        "compression": create_compression_pipeline(),
        "validation": create_validation_pipeline(),
        "deployment": create_deployment_pipeline(),
    }
    pipes["__default__"] = sum(pipes.values(), Pipeline([]))
    # the budgeted search, then the rest with its choice (distill, export, validate, deploy)
    pipes["search"] = create_compression_pipeline(search=True) + pipes["validation"] + pipes["deployment"]
    return pipes
