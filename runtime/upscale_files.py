"""Image files through an engine, for deployment (``srq upscale``): inputs, colour cases, output.

Colour cases: RGB through ``upscale_rgb`` (Y-only engines get Y, Cb/Cr by bicubic); gray
replicated to RGB and written back as the channel mean; alpha upscaled by MATLAB bicubic
with a warning (the engine never sees it). The output keeps the input's bit depth.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from srq.errors import SrqError
from srq.imaging.datasets import image_files
from srq.imaging.io import IMAGE_SUFFIXES, read_image, write_image
from srq.imaging.resize import imresize
from srq.runtime.engine import Engine
from srq.runtime.tiling import upscale_rgb


def collect_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their images; SrqError for missing paths,
    unsupported suffixes, empty folders or two inputs that would write the same output name."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise SrqError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise SrqError(f"{p}: not a supported image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.append(p)
        else:
            raise SrqError(f"{p}: no such file or folder")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem and by_stem[f.stem].resolve() != f.resolve():
            raise SrqError(f"{f}: would overwrite the output of {by_stem[f.stem]} ({f.stem}.png)")
        by_stem[f.stem] = f
    return list(dict.fromkeys(files))


def upscale_file(engine: Engine, src: Path, dst: Path, overlap: int | None = None) -> Path:
    """Read ``src``, upscale it with ``engine`` (tiled), write ``dst`` atomically."""
    img = read_image(src)
    gray = img.pixels.shape[2] == 1
    out = upscale_rgb(engine, np.ascontiguousarray(img.rgb(alpha_handled=True)), overlap)
    out = np.clip(out.mean(axis=2) if gray else out, 0.0, 1.0)
    alpha = None
    if img.alpha is not None:
        warnings.warn(f"{src}: has an alpha channel; it is upscaled by bicubic, not by the engine",
                      UserWarning, stacklevel=2)
        alpha = np.clip(imresize(img.alpha, output_size=out.shape[:2]), 0.0, 1.0)
    return write_image(dst, out, bit_depth=img.bit_depth, alpha=alpha)
