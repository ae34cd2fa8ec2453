"""Validation pipeline: every stage through ONNX Runtime, plots (stages; robustness against severity),
then the gates."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes
from kedro_edge.compress import registry


def create_validation_pipeline(**kwargs) -> Pipeline:
    modules = [t.output for t in registry.techniques()]
    # every stage's model: the teacher, its ONNX, model.onnx and each technique's module
    stages = [
        registry.REFERENCE_MODULE,
        "teacher_onnx",
        "model_onnx",
        "model_input",
        "compression_plan",
        "params:validation",
        *modules,
    ]
    return Pipeline(
        [
            node(
                nodes.evaluate_models,
                stages,
                ["compression_metrics", "robustness_curve"],
                name="evaluate_models",
            ),
            node(
                nodes.plot_robustness_curve,
                "robustness_curve",
                "robustness_plot",
                name="plot_robustness_curve",
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
                    "robustness_plot",
                    "sample_size",  # said before training; in the job that ends at the gates
                ],
                "validated_model",
                name="enforce_gates",
            ),
        ]
    )
