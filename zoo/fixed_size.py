"""A model's module prepared for one fixed input size, as exporters and calibrators trace it."""

from __future__ import annotations

from spandrel.architectures.SwinIR import SwinIR
from torch import nn

from srq.errors import SrqError
from srq.zoo.archs.swinir import at_input_size
from srq.zoo.loader import SRModel


def module_for_size(model: SRModel, hw: tuple[int, int]) -> nn.Module:
    """``model.module`` for an ``(H, W)`` input; SwinIR gets a copy with that size's attention masks.

    H and W must be positive multiples of ``model.size_multiple`` (SrqError otherwise).
    """
    h, w = hw
    m = model.size_multiple
    if h <= 0 or w <= 0 or h % m or w % m:
        raise SrqError(f"{model.source}: tile {h}x{w} is not a multiple of {m} (the {model.arch} "
                       f"{'window size' if isinstance(model.module, SwinIR) else 'size multiple'}); "
                       f"use e.g. {max(m, h - h % m)}x{max(m, w - w % m)}")
    if isinstance(model.module, SwinIR):
        return at_input_size(model.module, (h, w))
    return model.module
