"""Calibration stage (PyTorch): FP model + calibration data -> recipe (bounds per quantizer site)."""
