"""PyTorch SR model zoo: architecture detection from state-dict keys (spandrel registry + srq's own architecture files) and checkpoint loading.

Public API: ``load_model(spec, scale=None) -> SRModel``, ``upscale_image(model, lr) -> sr``,
``set_exact_statistics(module, on)`` (order-independent float64 statistics for quantized models), and
the modules an architecture uses so that calibration can see and swap them: ``Gate`` (a gated
product), ``Residual`` (a block's skip sum), ``Concat`` (a channel concatenation), ``ChannelContrast``
(per-channel std + mean) and ``NearestUpsample``.
"""

from srq.zoo.archs.common import (ChannelContrast, Concat, Gate, NearestUpsample, Residual,
                                  set_exact_statistics)
from srq.zoo.infer import upscale_image
from srq.zoo.loader import SRModel, load_model

__all__ = ["ChannelContrast", "Concat", "Gate", "NearestUpsample", "Residual", "SRModel", "load_model",
           "set_exact_statistics", "upscale_image"]
