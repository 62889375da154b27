"""Inference backends: the Protocol, its registry by file suffix, and ONNX Runtime, TensorRT and torch."""
