"""The one small interface every backend's engine offers (ONNX Runtime, TensorRT).

An engine is a fixed-shape single-input single-output SR network: it maps one LR tile
``(1, C, H, W)`` float32 in [0, 1] to ``(1, C, s*H, s*W)`` float32. Tiling, comparisons
and latency only ever see this interface, as Polygraphy's comparator only sees runners.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from srq.errors import SrqError


class Engine(abc.ABC):
    """A loaded fixed-shape SR engine; use as a context manager or call ``close()``."""

    path: Path
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int, int]  # (1, C, H, W): the LR tile
    output_shape: tuple[int, int, int, int]  # (1, C, s*H, s*W)

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """``x (1, C, H, W)`` float32 -> ``(1, C, s*H, s*W)`` float32 (one tile)."""

    def close(self) -> None:
        """Release the session / device memory (idempotent)."""

    @property
    def channels(self) -> int:
        return self.input_shape[1]

    @property
    def tile(self) -> tuple[int, int]:
        """LR tile size ``(H, W)`` in pixels."""
        return self.input_shape[2], self.input_shape[3]

    @property
    def scale(self) -> int:
        return scale_from_shapes(self.input_shape, self.output_shape, self.path)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path.name}, tile={self.tile}, "
                f"C={self.channels}, x{self.scale})")


def scale_from_shapes(inp: tuple[int, ...], out: tuple[int, ...], path: Path) -> int:
    """The integer upscaling factor ``out/in`` (same along H and W, same C) or SrqError."""
    if len(inp) != 4 or len(out) != 4:
        raise SrqError(f"{path}: expected 4-D (N, C, H, W) input and output, got {inp} -> {out}")
    if inp[0] != 1 or out[0] != 1:
        raise SrqError(f"{path}: batch size must be 1, got {inp} -> {out}")
    if inp[1] != out[1] or inp[1] not in (1, 3):
        raise SrqError(f"{path}: expected 1 (Y) or 3 (RGB) channels in and out, got {inp} -> {out}")
    sh, rh = divmod(out[2], inp[2])
    sw, rw = divmod(out[3], inp[3])
    if rh or rw or sh != sw or sh < 1:
        raise SrqError(f"{path}: output {out} is not an integer upscale of input {inp}")
    return sh


def check_fixed_shape(shape: list, what: str, path: Path) -> tuple[int, int, int, int]:
    """A declared ``(N, C, H, W)`` shape with a symbolic batch read as 1; SrqError if H/W are not fixed."""
    if len(shape) != 4:
        raise SrqError(f"{path}: {what} must be 4-D (N, C, H, W), got {shape}")
    n, c, h, w = shape
    n = n if isinstance(n, int) else 1
    if not all(isinstance(d, int) and d > 0 for d in (c, h, w)):
        raise SrqError(f"{path}: {what} shape {shape} is not fixed; srq runs fixed-shape "
                       "engines (export the model at a tile size, e.g. --tile 64x64)")
    return n, c, h, w


def open_engine(path: str | Path, threads: int = 0, save_optimized: bool = True) -> Engine:
    """An ``.onnx`` file in ONNX Runtime (CPU) or an ``.engine`` / ``.plan`` in TensorRT."""
    path = Path(path)
    if path.suffix.lower() in (".engine", ".plan", ".trt"):
        from srq.runtime.trt_engine import TrtEngine

        return TrtEngine(path)
    from srq.runtime.ort_engine import OrtEngine, OrtOptions

    return OrtEngine(path, OrtOptions(threads=threads, save_optimized=save_optimized))
