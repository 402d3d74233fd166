"""Calibration data: seeded random LR crops from a dataset (a folder or ``builtin:calib``).

``calibration_crops(spec, scale, count, size, in_channels, seed)`` -> ``(count, in_channels, size, size)``
float32 in [0, 1]: RGB / 255, or BT.601 Y / 255 for Y-only models (``in_channels == 1``, the
same input ``srq.zoo.infer.upscale_image`` feeds them). Crops are spread evenly over the images
(image ``i % n`` for crop ``i``), positions uniform, each flipped horizontally / vertically with
probability 1/2 when ``flips``. Only the LR side of each sample is used (2DQuant calibrates on LR
crops; HR is never needed).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from srq.errors import SrqError
from srq.imaging.color import rgb2ycbcr
from srq.imaging.datasets import open_dataset


def calibration_crops(spec: str, scale: int, count: int, size: int, in_channels: int = 3, seed: int = 0,
                      flips: bool = True) -> Tensor:
    """``(count, in_channels, size, size)`` float32 LR crops in [0, 1] from dataset ``spec`` at ``scale``."""
    if count < 1 or size < 1:
        raise SrqError(f"calibration data {spec}: need at least one crop of at least 1 pixel (got {count} x {size})")
    if in_channels not in (1, 3):
        raise SrqError(f"calibration data {spec}: models with {in_channels} input channels are not supported")
    dataset = open_dataset(spec, scale)
    if len(dataset) == 0:
        raise SrqError(f"calibration data {spec}: no images")
    rng = np.random.default_rng(seed)
    images = [None] * len(dataset)
    crops = np.empty((count, size, size, in_channels), dtype=np.float32)
    for i in range(count):
        k = i % len(dataset)
        if images[k] is None:
            lr = dataset[k].lr
            if lr.shape[0] < size or lr.shape[1] < size:
                raise SrqError(f"calibration data {spec}: image {dataset[k].name} LR {lr.shape[1]}x{lr.shape[0]} "
                               f"is smaller than the {size}x{size} crop")
            rgb = lr.astype(np.float32) / 255.0
            images[k] = rgb if in_channels == 3 else (rgb2ycbcr(rgb)[..., :1] / 255.0).astype(np.float32)
        img = images[k]
        top = int(rng.integers(img.shape[0] - size + 1))
        left = int(rng.integers(img.shape[1] - size + 1))
        crop = img[top:top + size, left:left + size]
        if flips and rng.random() < 0.5:
            crop = crop[:, ::-1]
        if flips and rng.random() < 0.5:
            crop = crop[::-1]
        crops[i] = crop
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
