"""Compression pipeline: (search ->) plan -> low-rank -> prune -> quantization-aware -> distill ->
cluster -> export teacher.onnx and model.onnx (INT8, mixed precision). Each technique can be
switched off; every technique node runs the plan: the configured recipe, or the search's choice."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes


def create_pipeline(search: bool = False, **kwargs) -> Pipeline:
    """``search``: always search (``kedro run --pipelines search``); else only when
    ``compression.search.enabled``."""
    return Pipeline(
        [
            node(
                nodes.run_search if search else nodes.search_compression,
                ["teacher_module", "model_input", "fleet", "params:compression", "params:training"],
                ["search_record", "search_plot"],
                name="search",
            ),
            node(
                nodes.plan_compression,
                ["search_record", "params:compression"],
                "compression_plan",
                name="plan",
            ),
            node(
                nodes.factorise_teacher,
                ["teacher_module", "model_input", "compression_plan", "params:training"],
                ["lowrank_module", "lowrank_report"],
                name="lowrank",
            ),
            node(
                nodes.prune_teacher,
                ["lowrank_module", "model_input", "compression_plan", "params:training"],
                ["pruned_module", "prune_report"],
                name="prune",
            ),
            node(
                nodes.quantize_student,
                ["pruned_module", "model_input", "compression_plan"],
                "qat_module",
                name="quantize",
            ),
            node(
                nodes.distill_student,
                ["qat_module", "teacher_module", "model_input", "compression_plan", "params:training"],
                "student_module",
                name="distill",
            ),
            node(
                nodes.cluster_student,
                ["student_module", "model_input", "compression_plan", "params:training"],
                ["clustered_module", "cluster_report"],
                name="cluster",
            ),
            node(
                nodes.export_teacher,
                ["teacher_module", "model_input", "compression_plan"],
                "teacher_onnx",
                name="export_teacher",
            ),
            node(
                nodes.export_model,
                ["clustered_module", "model_input", "compression_plan"],
                ["model_onnx", "quantize_report"],
                name="export_model",
            ),
        ]
    )
