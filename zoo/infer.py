"""Full-precision PyTorch inference of one image: the reference every exported engine is compared to."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from srq.imaging.color import rgb2ycbcr, ycbcr2rgb
from srq.imaging.resize import imresize
from srq.zoo.loader import SRModel


def run_padded(model: SRModel, x: torch.Tensor) -> torch.Tensor:
    """``(1, C, H, W)`` -> ``(1, C, sH, sW)``: reflect-pad H, W up to ``size_multiple`` (BasicSR's
    SwinIR evaluation), run the net, crop the padding's share of the output away."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % model.size_multiple, -w % model.size_multiple
    if pad_h >= h or pad_w >= w:
        raise ValueError(f"image {h}x{w} is too small to reflect-pad to a multiple of {model.size_multiple}")
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    with torch.no_grad():
        y = model.module(x)
    return y[..., : h * model.scale, : w * model.scale]


def upscale_image(model: SRModel, lr: np.ndarray) -> np.ndarray:
    """``lr`` (H, W, 3) float32 RGB in [0, 1] -> (scale*H, scale*W, 3) float32 in [0, 1] (clipped).

    Y-only models (``in_channels == 1``) run on BT.601 Y / 255; Cb and Cr are upscaled with MATLAB
    bicubic and the result converted back to RGB.
    """
    if lr.ndim != 3 or lr.shape[2] != 3:
        raise ValueError(f"upscale_image: expected (H, W, 3) RGB, got shape {lr.shape}")
    if model.in_channels == 3:
        x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).permute(2, 0, 1)[None]
        sr = run_padded(model, x)[0].permute(1, 2, 0).numpy()
        return np.clip(sr, 0.0, 1.0).astype(np.float32)
    ycbcr = rgb2ycbcr(lr)  # (H, W, 3) float64, 0..255
    y = torch.from_numpy((ycbcr[..., 0] / 255.0).astype(np.float32))[None, None]
    sr_y = run_padded(model, y)[0, 0].numpy().astype(np.float64) * 255.0
    sr_cbcr = imresize(ycbcr[..., 1:], scale=model.scale)
    sr = ycbcr2rgb(np.concatenate([sr_y[..., None], sr_cbcr], axis=2))
    return np.clip(sr, 0.0, 1.0).astype(np.float32)
