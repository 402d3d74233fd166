"""MATLAB-compatible bicubic ``imresize`` and the bicubic LR generator of the SR literature.

Why our own code: the SR benchmarks' LR inputs (EDSR/BasicSR ``LR_bicubic``) were made
with MATLAB's ``imresize(hr, 1/s, 'bicubic')``; Pillow, OpenCV and scikit-image all use
other kernels, boundary rules or no antialiasing, which shifts PSNR by tenths of a dB.
This follows MATLAB's ``imresize.m`` ``contributions()``: Keys cubic kernel with
a = -0.5, kernel stretched by 1/scale when downscaling (antialiasing), output pixel x
(1-based) centred at ``u = x/scale + 0.5*(1 - 1/scale)``, ``ceil(width) + 2`` taps,
weights normalised to sum 1, and out-of-range taps mirrored symmetrically
(``[1..n, n..1]``). Each axis is resized as a gather of the taps times precomputed
weights, in float64, dimension with the smaller scale first (MATLAB's order).

``imresize`` on a uint8 image behaves like MATLAB on uint8: each axis pass rounds
half-up and saturates to uint8 before the next pass (MATLAB's imresizemex returns the
input class per pass). This is what made the published ``LR_bicubic`` files and is what
``bicubic_lr`` uses.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), float64."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's per-axis taps: ``(weights (out, P) float64, indices (out, P) int64 0-based)``.

    ``scale`` = output/input size ratio as MATLAB uses it (the requested scale factor,
    not necessarily out_length / in_length). Taps that are zero for every output pixel are
    dropped, as MATLAB does.
    """
    kernel_width = 4.0
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if antialias else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float) -> np.ndarray:
    """Resize float64 ``img`` along ``axis`` (0 = height, 1 = width) to ``out_length``."""
    weights, indices = contributions(img.shape[axis], out_length, scale)
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((out_length,) + moved.shape[1:], dtype=np.float64)
    bcast = (slice(None),) + (None,) * (moved.ndim - 1)
    for tap in range(weights.shape[1]):
        out += weights[:, tap][bcast] * moved[indices[:, tap]]
    return np.moveaxis(out, 0, axis)


def round_to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8 cast: saturate to [0, 255], round half away from zero."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def output_shape(in_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale factor: ``ceil(scale * size)`` per axis."""
    return (math.ceil(scale * in_hw[0] - 1e-9), math.ceil(scale * in_hw[1] - 1e-9))


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """MATLAB ``imresize(img, scale | [h w], 'bicubic')`` for (H, W) or (H, W, C) arrays.

    Give exactly one of ``scale`` (same factor for both axes; output ``ceil(scale*size)``)
    or ``output_size`` = (out_h, out_w) (per-axis scale = out/in).
    A float input (any range) returns float64, unclipped. A uint8 input returns uint8,
    rounded and saturated after each axis pass as MATLAB does.
    """
    if (scale is None) == (output_size is None):
        raise ValueError("imresize: give exactly one of scale or output_size")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected (H, W) or (H, W, C), got shape {img.shape}")
    in_hw = (img.shape[0], img.shape[1])
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize: scale must be > 0, got {scale}")
        out_hw = output_shape(in_hw, scale)
        scales = (float(scale), float(scale))
    else:
        out_hw = (int(output_size[0]), int(output_size[1]))
        if min(out_hw) < 1:
            raise ValueError(f"imresize: output_size must be positive, got {output_size}")
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    is_uint8 = img.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"imresize: expected uint8 or float input, got {img.dtype}")
    out = img.astype(np.float64)
    # MATLAB: resize along the dimension with the smallest scale first (stable: H on ties).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        out = _resize_axis(out, axis, out_hw[axis], scales[axis])
        if is_uint8:
            out = round_to_uint8(out).astype(np.float64)
    return out.astype(np.uint8) if is_uint8 else out


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The SR literature's LR input: MATLAB ``imresize(hr, 1/scale, 'bicubic')`` on uint8.

    ``hr`` (H, W, C) or (H, W) uint8, H and W multiples of ``scale`` (modcrop first);
    returns (H/scale, W/scale[, C]) uint8.
    """
    if hr.dtype != np.uint8:
        raise ValueError(f"bicubic_lr: expected a uint8 image, got {hr.dtype}")
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(f"bicubic_lr: size {hr.shape[:2]} is not a multiple of {scale}; modcrop first")
    return imresize(hr, scale=1.0 / scale)
