"""Validation pipeline: every stage through ONNX Runtime, a plot, then the gates."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes
from kedro_edge.compress import registry


def create_validation_pipeline(**kwargs) -> Pipeline:
    modules = [t.output for t in registry.techniques()]
    return Pipeline(
        [
            node(
                nodes.evaluate_models,
                [
                    registry.REFERENCE_MODULE,
                    "teacher_onnx",
                    "model_onnx",
                    "model_input",
                    "compression_plan",
                    "params:validation",
                    *modules,
                ],
                "compression_metrics",
                name="evaluate_models",
            ),
            node(nodes.plot_compression, "compression_metrics", "compression_plot", name="plot_compression"),
            node(nodes.stage_table, "compression_metrics", "compression_stages", name="stage_table"),
            # the reports are inputs only so that the gates run after every figure is saved
            node(
                nodes.enforce_gates,
                [
                    "compression_metrics",
                    "model_file",
                    "teacher_source",
                    "compression_plot",
                    "compression_stages",
                ],
                "validated_model",
                name="enforce_gates",
            ),
        ]
    )
