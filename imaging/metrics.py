"""PSNR / SSIM on the Y channel exactly as BasicSR computes the numbers SR papers report.

Convention (``basicsr.metrics.calculate_psnr/ssim`` with ``test_y_channel=True``): both
images uint8 RGB (H, W, 3) (a float SR output is first rounded by ``to_uint8``, BasicSR's
``tensor2img``), ``crop_border`` pixels (= the scale) removed on every side, converted
to BT.601 Y in the 0..255 range without rounding (``rgb2y``), then:

- PSNR = 10 log10(255^2 / MSE); identical images give ``inf``.
- SSIM: 11x11 Gaussian window, sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, statistics
  over 'valid' windows only (BasicSR runs cv2.filter2D and crops 5 px, which is the same),
  mean of the SSIM map.

Everything is float64 (BasicSR computes Y in float32: per-image PSNR differs by < 1e-6 dB
on Set5/Set14 bicubic x2-x4).
Why our own code: the Gaussian filter is a separable 11-tap 'valid' correlation, a few
numpy lines; OpenCV would be a heavy dependency for it and scikit-image's SSIM (a test
dependency only) pads with reflection and crops afterwards instead of filtering 'valid'.
"""

from __future__ import annotations

import math

import numpy as np

from srq.imaging.color import rgb2y
from srq.imaging.io import to_uint8

__all__ = ["gaussian_window_1d", "psnr", "psnr_y", "ssim_y", "to_uint8", "y_channel"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def y_channel(img: np.ndarray, crop_border: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> border-cropped Y (H - 2b, W - 2b) float64 in 0..255, unrounded."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {img.dtype} {img.shape}")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return rgb2y(img.astype(np.float64) / 255.0)


def _pair(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} != HR shape {hr.shape}")
    return y_channel(sr, crop_border), y_channel(hr, crop_border)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two same-shape float arrays (any layout), float64; ``inf`` if equal."""
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} != {b.shape}")
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Y-channel PSNR (dB, peak 255) of uint8 RGB (H, W, 3) images, ``crop_border`` px cropped."""
    y_sr, y_hr = _pair(sr, hr, crop_border)
    return psnr(y_sr, y_hr, peak=255.0)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps (cv2.getGaussianKernel(size, sigma)), float64 (size,)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) float64 with taps x taps -> (H-k+1, W-k+1)."""
    k = taps.size
    rows = sum(taps[i] * img[i : img.shape[0] - k + 1 + i] for i in range(k))
    return sum(taps[j] * rows[:, j : img.shape[1] - k + 1 + j] for j in range(k))


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Y-channel SSIM (BasicSR ``_ssim``) of uint8 RGB (H, W, 3) images, ``crop_border`` px cropped."""
    y_sr, y_hr = _pair(sr, hr, crop_border)
    if min(y_sr.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping, got {y_sr.shape}")
    taps = gaussian_window_1d()
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    mu1 = _filter_valid(y_sr, taps)
    mu2 = _filter_valid(y_hr, taps)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(y_sr * y_sr, taps) - mu1_sq
    sigma2_sq = _filter_valid(y_hr * y_hr, taps) - mu2_sq
    sigma12 = _filter_valid(y_sr * y_hr, taps) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())
