"""Whole images of any size through a fixed-shape engine: overlapping tiles, centres kept.

Tiles are placed so that the first starts at the image's top/left edge and the last ends
at its bottom/right edge (the last one is shifted back, not padded), consecutive tiles
overlapping by at least ``2 * overlap`` LR pixels. Each output pixel comes from the one
tile whose kept region contains it; the boundary between two tiles lies in the middle of
their overlap, so every kept pixel has at least ``overlap`` pixels of real context on each
side inside its tile. For a CNN whose receptive-field radius is <= ``overlap`` this is
exact: a tile then computes the same value as the whole image would, and tile edges that
lie on the image edge see the network's own zero padding exactly as the whole image does.
Only a dimension smaller than the tile is padded (reflect) up to the tile; those output
pixels near the padded edge differ from what a network exported at that exact size gives.
``upscale_rgb`` also runs Y-only models (FSRCNN-style, C = 1): BT.601 Y through the engine,
Cb/Cr by MATLAB bicubic, as those models are evaluated in the literature.
Why our own code: Polygraphy, ONNX Runtime and the imaging libraries offer no tiled SR
inference.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from srq.errors import SrqError
from srq.imaging.color import rgb2ycbcr, ycbcr2rgb
from srq.imaging.resize import imresize
from srq.runtime.engine import Engine


def tile_layout(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis as ``(start, keep_from, keep_to)`` in LR pixels.

    ``start``: the tile's first pixel; ``[keep_from, keep_to)``: the image pixels taken
    from it. The kept ranges partition ``[0, length)``. ``length <= tile``: one tile at 0.
    """
    if overlap < 0:
        raise SrqError(f"tile overlap {overlap}: must be >= 0")
    if length <= tile:
        return [(0, 0, length)]
    step = tile - 2 * overlap
    if step < 1:
        raise SrqError(f"tile overlap {overlap}: too large for a {tile}-pixel tile "
                       f"(needs 2 * overlap < {tile})")
    n = -(-(length - tile) // step) + 1
    starts = [min(i * step, length - tile) for i in range(n)]
    cuts = [0] + [s1 + (s0 + tile - s1) // 2 for s0, s1 in zip(starts, starts[1:])] + [length]
    return [(s, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


DEFAULT_OVERLAP = 8


def default_overlap(tile: tuple[int, int]) -> int:
    """DEFAULT_OVERLAP, reduced for small tiles so that a tile's kept centre stays >= half of it."""
    return min(DEFAULT_OVERLAP, (min(tile) - 1) // 4)


def upscale(engine: Engine, img: np.ndarray, overlap: int | None = None,
            progress: bool | None = None) -> np.ndarray:
    """Run ``engine`` over ``img (H, W, C)`` (or ``(H, W)`` for C = 1) float32 in [0, 1].

    Returns ``(s*H, s*W, C)`` (or ``(s*H, s*W)``) float32, not clipped. ``overlap``: LR
    context pixels kept around each tile's centre (>= the network's receptive-field
    radius for a seamless, exact result; None: ``default_overlap``). ``progress``: tqdm bar over tiles; None shows
    it only on a terminal.
    """
    flat = img.ndim == 2
    x = img[:, :, None] if flat else img
    if x.ndim != 3 or x.shape[2] != engine.channels:
        raise SrqError(f"image of shape {img.shape} does not match {engine.path.name}, "
                       f"which takes {engine.channels} channel(s)")
    h, w, c = x.shape
    th, tw = engine.tile
    s = engine.scale
    overlap = default_overlap(engine.tile) if overlap is None else overlap
    pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
    if pad_h or pad_w:
        x = np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    rows, cols = tile_layout(h, th, overlap), tile_layout(w, tw, overlap)
    out = np.empty((h * s, w * s, c), np.float32)
    with tqdm(total=len(rows) * len(cols), desc=f"tiles {engine.path.name}", unit="tile",
              leave=False, disable=None if progress is None else not progress) as bar:
        for y0, ya, yb in rows:
            for x0, xa, xb in cols:
                tile = x[y0:y0 + th, x0:x0 + tw].transpose(2, 0, 1)[None]
                y = engine.run(np.ascontiguousarray(tile, dtype=np.float32))[0].transpose(1, 2, 0)
                out[ya * s:yb * s, xa * s:xb * s] = \
                    y[(ya - y0) * s:(yb - y0) * s, (xa - x0) * s:(xb - x0) * s]
                bar.update()
    return out[:, :, 0] if flat else out


def upscale_rgb(engine: Engine, rgb: np.ndarray, overlap: int | None = None,
                progress: bool | None = None) -> np.ndarray:
    """``rgb (H, W, 3)`` float32 in [0, 1] -> ``(s*H, s*W, 3)`` float32, not clipped.

    A 3-channel engine gets the RGB image; a 1-channel (Y-only) engine gets BT.601 Y / 255
    (studio range, 16..235 / 255) and Cb/Cr are upscaled by MATLAB bicubic.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"upscale_rgb: expected (H, W, 3), got {rgb.shape}")
    if engine.channels == 3:
        return upscale(engine, rgb, overlap, progress)
    ycc = rgb2ycbcr(rgb)  # (H, W, 3) float64, 0..255
    y = upscale(engine, (ycc[:, :, 0] / 255.0).astype(np.float32), overlap, progress)
    cbcr = imresize(ycc[:, :, 1:], output_size=y.shape)
    return ycbcr2rgb(np.concatenate([y[:, :, None] * 255.0, cbcr], axis=2)).astype(np.float32)
