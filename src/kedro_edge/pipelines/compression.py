"""Compression pipeline: (search ->) plan -> every registered technique in recipe order -> export
teacher.onnx and model.onnx (INT8, mixed precision). Each technique can be switched off; every
technique node runs the plan: the configured recipe, or the search's choice."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes
from kedro_edge.compress import registry


def create_compression_pipeline(search: bool = False, **kwargs) -> Pipeline:
    """``search``: always search (``kedro run --pipelines search``); else only when
    ``compression.search.enabled``."""
    teacher = registry.REFERENCE_MODULE
    chain, previous = [], teacher
    for technique in registry.techniques():
        chain.append(
            node(
                nodes.technique_node(technique.name),
                [previous, teacher, "model_input", "compression_plan", "params:training"],
                [technique.output, technique.report] if technique.report else technique.output,
                name=technique.name,
            )
        )
        previous = technique.output
    return Pipeline(
        [
            node(
                nodes.run_search if search else nodes.search_compression,
                [
                    teacher,
                    "model_input",
                    "fleet",
                    "params:compression",
                    "params:training",
                    "params:validation",
                ],
                ["search_record", "search_plot"],
                name="search",
            ),
            node(
                nodes.plan_compression,
                ["search_record", "params:compression", "teacher_source"],
                "compression_plan",
                name="plan",
            ),
            *chain,
            node(
                nodes.export_teacher,
                [teacher, "model_input", "compression_plan"],
                "teacher_onnx",
                name="export_teacher",
            ),
            node(
                nodes.export_model,
                [previous, "model_input", "compression_plan"],
                ["model_onnx", "quantize_report"],
                name="export_model",
            ),
        ]
    )
