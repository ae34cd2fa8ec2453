"""Model architectures: built-in reference designs and a factory for any ``nn.Module``.

``ResidualCNN`` (residual conv net), ``MobileNetV2`` (inverted residuals, depthwise convs),
``MLP`` (feature vectors or flattened images) and ``SegNet`` (encoder-decoder, per-pixel classes)
are chosen like a user's own class, by
import path in ``model.class_path``; ``build_model`` fills in what the data decides.
"""

from kedro_edge.models.cnn import ResidualCNN, conv_bn_relu
from kedro_edge.models.factory import build_model, import_class
from kedro_edge.models.mlp import MLP
from kedro_edge.models.mobilenet import MobileNetV2
from kedro_edge.models.segnet import SegNet

__all__ = ["MLP", "MobileNetV2", "ResidualCNN", "SegNet", "build_model", "conv_bn_relu", "import_class"]
