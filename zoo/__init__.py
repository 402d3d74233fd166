"""PyTorch SR model zoo: architecture detection from state-dict keys (spandrel registry + srq's own architecture files) and checkpoint loading."""
