"""Benchmark sets as (name, HR, LR) samples: an EDSR/BasicSR folder, a flat folder, or ``builtin:<name>``.

Folder layout (EDSR/BasicSR): ``DIR/HR/<stem>.<ext>`` and optionally
``DIR/LR_bicubic/X{s}/<stem>x{s}.<ext>``. A folder without ``HR/`` is itself the HR folder.
HR is modcropped to a multiple of the scale; LR is read from ``LR_bicubic`` when the file
exists (its size must be exactly HR/scale) and otherwise generated with ``bicubic_lr``
(MATLAB imresize). Gray images are replicated to RGB (as cv2.IMREAD_COLOR); 16-bit images
are rounded to 8 bits (``to_uint8``); alpha is dropped with a warning.

``open_dataset("builtin:<name>", scale)`` hands over to ``srq.imaging.builtin.open_builtin``
(imported lazily), which returns a ``BenchmarkSet`` too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srq.errors import SrqError
from srq.imaging.io import IMAGE_SUFFIXES, read_image, to_uint8
from srq.imaging.resize import bicubic_lr

BUILTIN_PREFIX = "builtin:"


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop (H, W[, C]) to the largest multiple of ``scale`` per axis, keeping the top-left."""
    return img[: img.shape[0] - img.shape[0] % scale, : img.shape[1] - img.shape[1] % scale]


def read_rgb_uint8(path: Path) -> np.ndarray:
    """Any supported image file -> (H, W, 3) uint8 RGB (gray replicated, 16-bit rounded)."""
    return to_uint8(read_image(path).rgb())


@dataclass(frozen=True)
class Sample:
    """One benchmark image: ``hr`` (H, W, 3) uint8, ``lr`` (H/s, W/s, 3) uint8."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


@dataclass(frozen=True)
class BenchmarkSet(Sequence[Sample]):
    """A sorted list of HR files (and optional reference LR files) read lazily per sample."""

    name: str
    scale: int
    hr_paths: tuple[Path, ...]
    lr_paths: tuple[Path | None, ...]

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        hr_path, lr_path = self.hr_paths[index], self.lr_paths[index]
        hr = modcrop(read_rgb_uint8(hr_path), self.scale)
        want = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
        if lr_path is None:
            lr = bicubic_lr(hr, self.scale)
        else:
            lr = read_rgb_uint8(lr_path)
            if lr.shape[:2] != want:
                raise SrqError(
                    f"{lr_path}: LR size {lr.shape[1]}x{lr.shape[0]} != HR {hr_path.name} "
                    f"modcropped {hr.shape[1]}x{hr.shape[0]} / {self.scale} = {want[1]}x{want[0]}"
                )
        return Sample(name=hr_path.stem, hr=hr, lr=lr)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


def image_files(folder: Path) -> list[Path]:
    """Supported image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def open_folder(folder: str | os.PathLike, scale: int) -> BenchmarkSet:
    """A benchmark folder (``HR/`` [+ ``LR_bicubic/X{s}/``]) or a flat folder of HR images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SrqError(f"{folder}: dataset folder does not exist" if not folder.exists() else f"{folder}: not a folder")
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    hr_paths = image_files(hr_dir)
    if not hr_paths:
        raise SrqError(f"{hr_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    lr_by_stem = {p.stem: p for p in image_files(lr_dir)} if lr_dir.is_dir() else {}
    lr_paths = tuple(lr_by_stem.get(f"{p.stem}x{scale}") for p in hr_paths)
    return BenchmarkSet(name=folder.name, scale=scale, hr_paths=tuple(hr_paths), lr_paths=lr_paths)


def open_dataset(spec: str, scale: int) -> BenchmarkSet:
    """``builtin:<name>`` -> ``srq.imaging.builtin.open_builtin(name, scale)``; else a folder path."""
    if not isinstance(scale, int) or scale < 1:
        raise SrqError(f"scale must be a positive integer, got {scale!r}")
    if spec.startswith(BUILTIN_PREFIX):
        from srq.imaging.builtin import open_builtin

        return open_builtin(spec[len(BUILTIN_PREFIX) :], scale)
    return open_folder(spec, scale)
