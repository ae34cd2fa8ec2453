"""What runs the model and how it is carried: the ONNX export, the host ONNX Runtime session
(prediction, latency, parity), the timing specification and the codec of the bytes shipped.

This is the bottom of the model stack: it imports no compression, evaluation or fleet code.
"""
