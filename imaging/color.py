"""MATLAB ``rgb2ycbcr`` / ``ycbcr2rgb`` (ITU-R BT.601, studio range), as the SR literature uses.

For RGB in [0, 1], in the 0..255 range: Y = 16 + 65.481 R + 128.553 G + 24.966 B,
Cb = 128 - 37.797 R - 74.203 G + 112 B, Cr = 128 + 112 R - 93.786 G - 18.214 B.
The inverse uses the exact matrix inverse in float64 (as MATLAB's ``ycbcr2rgb`` does),
not BasicSR's 8-digit rounded constants. Everything here is float64 and unrounded.
"""

from __future__ import annotations

import numpy as np

RGB_TO_YCBCR = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def _check_rgb(img: np.ndarray, fn: str) -> np.ndarray:
    if img.shape[-1] != 3:
        raise ValueError(f"{fn}: expected (..., 3) channels last, got shape {img.shape}")
    return np.asarray(img, dtype=np.float64)


def rgb2ycbcr(rgb01: np.ndarray) -> np.ndarray:
    """(..., 3) RGB float in [0, 1] -> (..., 3) YCbCr float64 in the 0..255 range (Y in 16..235)."""
    return _check_rgb(rgb01, "rgb2ycbcr") @ RGB_TO_YCBCR.T + YCBCR_OFFSET


def rgb2y(rgb01: np.ndarray) -> np.ndarray:
    """(..., 3) RGB float in [0, 1] -> (...) Y float64 in the 0..255 range (16..235), unrounded."""
    return _check_rgb(rgb01, "rgb2y") @ RGB_TO_YCBCR[0] + YCBCR_OFFSET[0]


def ycbcr2rgb(ycbcr255: np.ndarray) -> np.ndarray:
    """(..., 3) YCbCr float in the 0..255 range -> (..., 3) RGB float64 in [0, 1], NOT clipped."""
    return (_check_rgb(ycbcr255, "ycbcr2rgb") - YCBCR_OFFSET) @ YCBCR_TO_RGB.T
