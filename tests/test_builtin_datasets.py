"""Built-in datasets: builtin:demo (embedded, no scikit-image) and builtin:calib (scikit-image's shipped photos)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from srq.errors import SrqError
from srq.imaging.builtin import CALIB_FILES, DEMO_DIR, DEMO_FILES, skimage_data_dir
from srq.imaging.datasets import open_dataset
from srq.imaging.io import read_image
from srq.imaging.resize import bicubic_lr


def test_demo_resolves_without_importing_skimage():
    code = (
        "import sys\n"
        "from srq.imaging.datasets import open_dataset\n"
        "s = list(open_dataset('builtin:demo', 2))\n"
        "assert 'skimage' not in sys.modules, 'skimage was imported'\n"
        "print(len(s))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(len(DEMO_FILES))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_demo_samples_are_modcropped_hr_and_bicubic_lr(scale):
    samples = list(open_dataset("builtin:demo", scale))
    assert [s.name for s in samples] == [f.rsplit(".", 1)[0] for f in DEMO_FILES]
    for s, f in zip(samples, DEMO_FILES):
        full = read_image(DEMO_DIR / f).pixels
        h, w = full.shape[0] // scale * scale, full.shape[1] // scale * scale
        assert s.hr.dtype == np.uint8 and s.hr.shape == (h, w, 3)
        assert s.lr.dtype == np.uint8 and s.lr.shape == (h // scale, w // scale, 3)
        np.testing.assert_array_equal(s.lr, bicubic_lr(s.hr, scale))


def test_demo_images_are_small_and_not_training_images():
    assert sum((DEMO_DIR / f).stat().st_size for f in DEMO_FILES) <= 1.5e6
    assert not set(DEMO_FILES) & set(CALIB_FILES)


def test_calib_reads_scikit_image_data():
    samples = list(open_dataset("builtin:calib", 2))
    assert [s.name for s in samples] == [f.rsplit(".", 1)[0] for f in CALIB_FILES]
    astronaut = samples[0]
    assert astronaut.hr.shape == (512, 512, 3) and astronaut.lr.shape == (256, 256, 3)
    camera = samples[CALIB_FILES.index("camera.png")]  # grayscale file -> replicated RGB
    assert np.array_equal(camera.hr[..., 0], camera.hr[..., 2])
    assert (skimage_data_dir() / "astronaut.png").is_file()


def test_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(SrqError, match=r"builtin:nope: unknown built-in dataset \(known: builtin:calib, builtin:demo\)"):
        open_dataset("builtin:nope", 2)


def test_calib_without_scikit_image_is_a_clear_error():
    code = (
        "import sys\n"
        "sys.modules['skimage'] = None  # the import system's marker for 'not importable'\n"
        "from srq.errors import SrqError\n"
        "from srq.imaging.datasets import open_dataset\n"
        "try:\n"
        "    open_dataset('builtin:calib', 2)\n"
        "except SrqError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("builtin:calib: needs the images shipped with scikit-image, which is not installed")
