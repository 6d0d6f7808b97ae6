"""Export to ONNX and TFLite with parity validation, and the torch-free on-device runtime (issue 4)."""
