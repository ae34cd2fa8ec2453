"""Compression techniques, one module each, registered in recipe order (``compress.registry``).

    lowrank.py          10  truncated-SVD factorisation of Linear and Conv layers
    prune.py            20  structured (channels removed) or unstructured pruning
    quantize.py         30  quantization-aware training (fake INT8 in torch)
    distill.py          40  knowledge distillation from the teacher
    cluster.py          50  per-layer k-means weight sharing (fewer bytes shipped)
    ptq.py                  post-training quantization: the FP32 graph to INT8 QDQ (ONNX Runtime)
    mixed_precision.py      which layers stay float in the INT8 graph

Nothing here knows about Kedro or the fleet; each technique takes and returns modules
(post-training quantization and mixed precision: ONNX graphs).
"""

from kedro_edge.compress import cluster, distill, lowrank, prune, quantize  # noqa: F401  (they register)
from kedro_edge.compress.registry import REFERENCE, Context, Technique, get, register, stage_names, techniques

__all__ = ["REFERENCE", "Context", "Technique", "get", "register", "stage_names", "techniques"]
