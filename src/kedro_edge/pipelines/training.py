"""Training pipeline: raw images -> seeded splits (is the test split big enough for the gates?) ->
FP32 teacher (trained, or the user's loaded)."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes
from kedro_edge.compress.registry import REFERENCE_MODULE


def create_training_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(nodes.split_dataset, ["raw_images", "params:data"], "model_input", name="split_dataset"),
            # sorts before train_teacher: the warning comes before the training it is about
            node(
                nodes.check_sample_size,
                ["model_input", "params:validation"],
                "sample_size",
                name="check_sample_size",
            ),
            node(
                nodes.train_teacher,
                ["model_input", "params:model", "params:training"],
                [REFERENCE_MODULE, "teacher_source"],
                name="train_teacher",
            ),
        ]
    )
