"""Compression stages: structured pruning, quantization-aware fake quantization, distillation.

Nothing here knows about Kedro, ONNX or the fleet; each stage takes and returns modules.
"""
