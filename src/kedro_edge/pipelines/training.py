"""Training pipeline: raw images -> seeded splits -> FP32 teacher (trained, or the user's loaded)."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes
from kedro_edge.compress.registry import REFERENCE_MODULE


def create_training_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.split_dataset, ["raw_images", "params:data"], "model_input", name="split_dataset"),
            node(
                nodes.train_teacher,
                ["model_input", "params:model", "params:training"],
                [REFERENCE_MODULE, "teacher_source"],
                name="train_teacher",
            ),
        ]
    )
