"""Helpers shared by srq's architecture files: descriptor construction and state-dict counting.

Multi-scale networks (one set of weights, scale picked at run time: CARN-M, FSRCNN, PAN x2/x3)
expose ``scales: tuple[int, ...]`` and ``at_scale(scale) -> nn.Module``, a copy whose
``forward(x)`` runs at that scale. ``srq.zoo.loader`` uses this to fix the scale at load time.
"""

from __future__ import annotations

import copy
import re

import torch
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


class Concat(nn.Module):
    """``torch.cat(parts, dim=1)`` as a module, so that calibration can put the result on one grid
    (``srq.calib.layers.QuantConcat``: ONNX Runtime's ``QLinearConcat``) for whatever reads it, e.g. IMDN's
    channel attention, which can then sum its statistics and gate its input in integers."""

    def forward(self, *parts: Tensor) -> Tensor:
        return torch.cat(parts, dim=1)


class ChannelContrast(nn.Module):
    """Per-channel contrast ``std + mean`` over the spatial axes: ``(N, C, H, W) -> (N, C, 1, 1)`` (IMDN's CCA).

    ``exact_statistics`` (set by ``set_exact_statistics`` when a model is quantized): mean and variance
    are summed in float64 and rounded to float32 once, so any summation order (PyTorch's, an engine's
    ReduceMean) gives the same float32. In float32 they differ by a few ulp between PyTorch and ONNX
    Runtime, and a statistic near a quantization tie then takes another level in the engine than in
    calibration (one 64x64 tile of Set5 baby at W8A8, docs/export-parity.md); the square root is then the
    correctly rounded one too (``contrast``). Off, the FP model (and its ONNX, the speed baseline) computes in
    float32. On a tensor that is on a grid, calibration swaps in
    ``srq.calib.layers.GridContrast``, which sums its integer levels instead, as the engine does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.exact_statistics = False

    def forward(self, x: Tensor) -> Tensor:
        # over one flattened axis: ONNX Runtime reduces the last axis fast, while a (2, 3) mean of
        # data its layout pass has moved to NHWC runs strided and slow (docs/speed.md)
        flat = x.flatten(2).double() if self.exact_statistics else x.flatten(2)
        mean = flat.mean(dim=2, keepdim=True)
        var = (flat - mean).pow(2).mean(dim=2, keepdim=True)
        mean, var = mean.to(x.dtype)[..., None], var.to(x.dtype)[..., None]
        return contrast(mean, var, self.exact_statistics)


def contrast(mean: Tensor, var: Tensor, exact: bool = False) -> Tensor:
    """``sqrt(var) + mean`` (float32, bit-identical to the reference's ``var ** 0.5``) with a finite
    gradient at ``var == 0``: a channel that quantization makes constant would otherwise send
    ``inf * 0 = NaN`` upstream (DQC). ``exact``: the root taken in float64 and rounded, i.e. the correctly
    rounded float32 root, which an engine reproduces (PyTorch's and ONNX Runtime's float32 square roots
    are approximations that differ from it, and from each other, in the last bit)."""
    positive = var > 0
    safe = torch.where(positive, var, torch.ones_like(var))
    root = safe.double().sqrt().to(var.dtype) if exact else safe.sqrt()
    return torch.where(positive, root, torch.zeros_like(var)) + mean


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
