"""Compression pipeline: low-rank -> prune -> quantization-aware -> distill -> cluster -> export
teacher.onnx and model.onnx (INT8, mixed precision). Each technique can be switched off."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.factorise_teacher,
                ["teacher_module", "model_input", "params:compression", "params:training"],
                ["lowrank_module", "lowrank_report"],
                name="lowrank",
            ),
            node(
                nodes.prune_teacher,
                ["lowrank_module", "model_input", "params:compression", "params:training"],
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
                nodes.cluster_student,
                ["student_module", "model_input", "params:compression", "params:training"],
                ["clustered_module", "cluster_report"],
                name="cluster",
            ),
            node(
                nodes.export_teacher,
                ["teacher_module", "model_input", "params:compression"],
                "teacher_onnx",
                name="export_teacher",
            ),
            node(
                nodes.export_model,
                ["clustered_module", "model_input", "params:compression"],
                ["model_onnx", "quantize_report"],
                name="export_model",
            ),
        ]
    )
