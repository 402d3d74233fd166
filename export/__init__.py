"""Export stage (PyTorch + onnx): FP model + recipe -> QDQ ONNX (asymmetric for ORT, symmetric for TensorRT)."""
