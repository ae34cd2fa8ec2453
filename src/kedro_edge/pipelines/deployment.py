"""Deployment pipeline: the validated model.onnx rolled out to devices.yml in gated waves."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes


def create_deployment_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.release_to_fleet,
                ["model_file", "validated_model", "fleet", "model_input", "params:deployment"],
                ["release_record", "device_benchmarks"],
                name="release_to_fleet",
            ),
            node(
                nodes.plot_device_latency,
                "device_benchmarks",
                "device_latency_plot",
                name="plot_device_latency",
            ),
            node(nodes.release_markdown, "release_record", "release_report", name="release_report"),
            # the reports are inputs only so that a refusal is raised after every one is saved
            node(
                nodes.enforce_release,
                ["release_record", "device_latency_plot", "release_report"],
                None,
                name="enforce_release",
            ),
        ]
    )
