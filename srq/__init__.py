"""srq: low-bit post-training quantization of super-resolution networks.

Stages (one sub-package each, data flows one way through versioned files):
``srq.calib`` (model -> recipe), ``srq.export`` (model + recipe -> QDQ ONNX),
``srq.runtime`` (ONNX -> engine -> parity report, torch-free), ``srq.pipeline`` (CLI).
Shared foundations: ``srq.imaging`` (torch-free image I/O, bicubic, metrics, datasets)
and ``srq.zoo`` (PyTorch SR architectures and checkpoint loading).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srq")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
