"""Built-in datasets by name: ``builtin:demo`` (embedded held-out photos) and ``builtin:calib``.

``demo``: the held-out images embedded in ``imaging/builtin/`` (no extra dependency, so
the torch-free deploy side has it). ``calib``: the images srq's default model was trained
on, read from the scikit-image package's shipped ``skimage/data`` folder (located
without importing scikit-image; install it with the ``calib`` extra). Grayscale images
are replicated to 3 channels. Which files, and their licences: ``imaging/builtin/README.md``.

The result is a ``srq.imaging.datasets.BenchmarkSet`` like a benchmark folder's: samples
with ``name``, ``hr`` (H, W, 3) uint8 modcropped to the scale and ``lr`` (H/s, W/s, 3)
uint8 by MATLAB bicubic (``srq.imaging.resize.bicubic_lr``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from srq.errors import SrqError
from srq.imaging.datasets import BenchmarkSet

DEMO_DIR = Path(__file__).with_name("builtin")
# Held out from training; copies of skimage/data/<name>.png (both CC0).
DEMO_FILES = ("chelsea.png", "coffee.png")
# The training images: file names inside skimage/data (public domain or CC0, see README).
CALIB_FILES = (
    "astronaut.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
)
BUILTIN_NAMES = ("calib", "demo")


def skimage_data_dir() -> Path:
    """The installed scikit-image's ``skimage/data`` folder, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SrqError(
            "builtin:calib: needs the images shipped with scikit-image, which is not installed "
            "(pip install 'srq[calib]' or pip install scikit-image)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def builtin_paths(name: str) -> list[Path]:
    """The image files of built-in dataset ``name`` (``calib`` or ``demo``)."""
    if name == "demo":
        return [DEMO_DIR / f for f in DEMO_FILES]
    if name == "calib":
        folder = skimage_data_dir()
        paths = [folder / f for f in CALIB_FILES]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise SrqError(f"builtin:calib: {folder} lacks {', '.join(missing)} (scikit-image install incomplete?)")
        return paths
    raise SrqError(f"builtin:{name}: unknown built-in dataset (known: {', '.join('builtin:' + n for n in BUILTIN_NAMES)})")


def open_builtin(name: str, scale: int) -> BenchmarkSet:
    """``builtin:<name>`` at ``scale``: modcropped HR and its MATLAB-bicubic LR, read lazily."""
    paths = tuple(builtin_paths(name))
    return BenchmarkSet(name=f"builtin:{name}", scale=scale, hr_paths=paths, lr_paths=(None,) * len(paths))
