"""Helpers shared by srq's architecture files: descriptor construction and state-dict counting.

Multi-scale networks (one set of weights, scale picked at run time: CARN-M, FSRCNN, PAN x2/x3)
expose ``scales: tuple[int, ...]`` and ``at_scale(scale) -> nn.Module``, a copy whose
``forward(x)`` runs at that scale. ``srq.zoo.loader`` uses this to fix the scale at load time.
"""

from __future__ import annotations

import copy
import re

import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, SizeRequirements, StateDict
from torch import Tensor, nn


def scaled_copy(net: nn.Module, scale: int) -> nn.Module:
    """Deep copy of multi-scale ``net`` with ``scale`` set (ValueError if not in ``net.scales``)."""
    if scale not in net.scales:
        raise ValueError(f"{type(net).__name__} with these weights runs at x{net.scales}, not x{scale}")
    out = copy.deepcopy(net)
    out.scale = scale
    return out


class Gate(nn.Module):
    """``x * gate`` as a module, so that calibration can swap it (``srq.calib.layers.QuantGate``).

    By default use it only where exactly one layer, and nothing else, reads the product: an integer
    engine then fuses the product with that layer's input quantization (ONNX Runtime's ``QLinearMul``),
    which calibration reproduces. ``requantized=True`` (anything may read the product, e.g. an
    activation): with integer gates the product gets its own grid, which the same kernel computes."""

    def __init__(self, requantized: bool = False) -> None:
        super().__init__()
        self.requantized = requantized

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        return x * gate


class Residual(nn.Module):
    """``body + skip`` as a module, so that calibration can swap it (``srq.calib.layers.QuantResidual``):
    with integer residuals the sum gets its own 8-bit grid, which an integer engine computes from the
    two 8-bit inputs in one kernel (ONNX Runtime's ``QLinearAdd``). ``body`` is the block's output, ``skip``
    its input (that order: it fixes the kernel's arithmetic, which calibration reproduces)."""

    def forward(self, body: Tensor, skip: Tensor) -> Tensor:
        return body + skip


class NearestUpsample(nn.Module):
    """Nearest-neighbour upsampling by ``factor`` (given per call, so multi-scale nets can share it) as a
    module, so that calibration sees it move values without changing them: a tensor on a grid stays on it."""

    def forward(self, x: Tensor, factor: int) -> Tensor:
        return F.interpolate(x, scale_factor=factor, mode="nearest")


def set_exact_statistics(net: nn.Module, on: bool = True) -> int:
    """Switch the float64 statistics of every module that has them (``exact_statistics``, e.g.
    IMDN's channel attention) on or off; returns how many modules have them. Quantized models
    (calibration, fake-quant evaluation, the quantized export) run them on, so that engine and
    calibration round alike; FP models off."""
    found = [m for m in net.modules() if hasattr(m, "exact_statistics")]
    for m in found:
        m.exact_statistics = on
    return len(found)


def count_numbered(state_dict: StateDict, prefix: str) -> int:
    """Number of consecutive ``{prefix}1.``, ``{prefix}2.``, ... module names (1-based, no dot)."""
    found = {int(m.group(1)) for k in state_dict if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    n = 0
    while n + 1 in found:
        n += 1
    return n


def sr_descriptor(
    arch: Architecture, model: nn.Module, state_dict: StateDict, *, scale: int, channels: int,
    tags: list[str], min_size: int = 0,
) -> ImageModelDescriptor:
    """Load ``state_dict`` into ``model`` (strict) and describe it as an SR model (same in/out channels)."""
    return ImageModelDescriptor(
        model, state_dict, architecture=arch, purpose="SR", tags=tags,
        supports_half=False, supports_bfloat16=False, scale=scale,
        input_channels=channels, output_channels=channels,
        size_requirements=SizeRequirements(minimum=min_size),
    )
