"""Deployment pipeline: validated model.onnx -> every device in devices.yml -> report and plot."""

from kedro.pipeline import Pipeline, node

from kedro_edge import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.deploy_to_fleet,
                ["model_file", "validated_model", "fleet", "model_input", "params:deployment"],
                "device_benchmarks",
                name="deploy_to_fleet",
            ),
            node(
                nodes.plot_device_latency,
                "device_benchmarks",
                "device_latency_plot",
                name="plot_device_latency",
            ),
            # the plot is an input only so that a failure is raised after every report is saved
            node(
                nodes.enforce_fleet, ["device_benchmarks", "device_latency_plot"], None, name="enforce_fleet"
            ),
        ]
    )
