"""PyTorch SR model zoo: architecture detection from state-dict keys (spandrel registry + srq's own architecture files) and checkpoint loading.

Public API: ``load_model(spec, scale=None) -> SRModel`` and ``upscale_image(model, lr) -> sr``.
"""

from srq.zoo.infer import upscale_image
from srq.zoo.loader import SRModel, load_model

__all__ = ["SRModel", "load_model", "upscale_image"]
