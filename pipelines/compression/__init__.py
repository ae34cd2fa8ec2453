"""Compression pipeline: prune -> quantization-aware -> distill -> export teacher.onnx and model.onnx."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.prune_teacher,
                ["teacher_module", "model_input", "params:compression", "params:training"],
                ["pruned_module", "prune_report"],
                name="prune",
            ),
            node(
                nodes.quantize_student,
                ["pruned_module", "model_input", "params:compression"],
                "qat_module",
                name="quantize",
            ),
            node(
                nodes.distill_student,
                ["qat_module", "teacher_module", "model_input", "params:compression", "params:training"],
                "student_module",
                name="distill",
            ),
            node(
                nodes.export_teacher,
                ["teacher_module", "model_input", "params:compression"],
                "teacher_onnx",
                name="export_teacher",
            ),
            node(
                nodes.export_model,
                ["student_module", "model_input", "params:compression"],
                "model_onnx",
                name="export_model",
            ),
        ]
    )
