"""ONNX export, parity checks, ONNX Runtime inference and latency measurement."""
