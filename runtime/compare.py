"""Compare functions: SR output vs ground truth, engine vs FP model, engine vs reference outputs.

Plain functions over numpy arrays, like Polygraphy's comparator functions: the caller
runs the engines, these only score. Images are ``(H, W, 3)`` RGB, floats in [0, 1]
(engine outputs, unclipped) or uint8 (ground truth). Y-PSNR/SSIM follow the SR papers'
convention (``srq.imaging.metrics``: uint8 rounding, BT.601 Y, ``crop_border`` = scale).
"""

from __future__ import annotations

import numpy as np

from srq.imaging.metrics import SSIM_WINDOW, psnr, psnr_y, ssim_y, to_uint8

PARITY_TOLERANCE = 1.0 / 255.0


def quality_vs_gt(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float | None]:
    """``{"psnr_y", "ssim_y"}`` of float ``sr`` against uint8 ``hr`` (same shape), border = scale.

    ``ssim_y`` is None for images smaller than the SSIM window after the border crop.
    """
    sr8 = to_uint8(sr)
    big_enough = min(hr.shape[:2]) - 2 * scale >= SSIM_WINDOW
    return {"psnr_y": psnr_y(sr8, hr, crop_border=scale),
            "ssim_y": ssim_y(sr8, hr, crop_border=scale) if big_enough else None}


def psnr_y_between(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    """Y-PSNR (dB) of float output ``a`` against float output ``b``, both rounded to uint8 first."""
    return psnr_y(to_uint8(a), to_uint8(b), crop_border=scale)


def parity(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Engine output vs reference float output (e.g. the fake-quantized model), unrounded.

    ``parity_psnr``: PSNR (dB, peak 1) over all RGB values; ``parity_frac_over``: fraction
    of pixels where any channel differs by more than 1/255.
    """
    if out.shape != ref.shape:
        raise ValueError(f"parity: output {out.shape} vs reference {ref.shape}")
    diff = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64))
    over = diff > PARITY_TOLERANCE
    per_pixel = over.any(axis=-1) if out.ndim == 3 else over
    return {"parity_psnr": psnr(out, ref, peak=1.0), "parity_frac_over": float(per_pixel.mean())}


def mean_of(rows: list[dict], key: str) -> float | None:
    """Mean of ``row[key]`` over rows that have it (None when none has it)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None
