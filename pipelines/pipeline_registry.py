"""Explicit registry: ``find_pipelines`` would look in ``pipelines.pipelines``."""

from kedro.pipeline import Pipeline

from pipelines import compression, deployment, training, validation


def register_pipelines() -> dict[str, Pipeline]:
    pipes = {
        "training": training.create_pipeline(),
        "compression": compression.create_pipeline(),
        "validation": validation.create_pipeline(),
        "deployment": deployment.create_pipeline(),
    }
    pipes["__default__"] = sum(pipes.values(), Pipeline([]))
    # the budgeted search, then the rest with its choice (distill, export, validate, deploy)
    pipes["search"] = compression.create_pipeline(search=True) + pipes["validation"] + pipes["deployment"]
    return pipes
