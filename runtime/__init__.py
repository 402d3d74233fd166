"""Runtime stage (torch-free): ONNX -> ORT/TensorRT engine, tiled inference, parity report and release gates."""
