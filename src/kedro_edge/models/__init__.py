"""Model architectures: built-in reference designs and a factory for any ``nn.Module``.

``ResidualCNN`` (residual conv net), ``MobileNetV2`` (inverted residuals, depthwise convs)
and ``MLP`` (feature vectors or flattened images) are chosen like a user's own class, by
import path in ``model.class_path``; ``build_model`` fills in what the data decides.
"""

from kedro_edge.models.cnn import ResidualCNN, conv_bn_relu
from kedro_edge.models.factory import build_model, import_class
from kedro_edge.models.mlp import MLP
from kedro_edge.models.mobilenet import MobileNetV2

__all__ = ["MLP", "MobileNetV2", "ResidualCNN", "build_model", "conv_bn_relu", "import_class"]
