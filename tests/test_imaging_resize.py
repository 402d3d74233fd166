"""srq.imaging.resize: hand-computed MATLAB taps, invariants, and conformance with MATLAB's LR files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from srq.imaging.datasets import modcrop
from srq.imaging.resize import bicubic_lr, contributions, cubic, imresize


def test_cubic_kernel_values() -> None:
    # Keys a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 on [0, 1], -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 on (1, 2].
    x = np.array([0.0, 0.25, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, -0.5])
    want = [1.0, 0.8671875, 0.5625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0, 0.5625]
    np.testing.assert_allclose(cubic(x), want, rtol=0, atol=1e-15)


def test_contributions_upscale_x2_hand_computed() -> None:
    # Output pixel 1 of 4 -> 8: u = 1/2 + 0.25 = 0.75, taps at 1-based -1..2 (distances 1.75, 0.75,
    # -0.25, -1.25), mirrored [1 2 3 4 4 3 2 1] -> 1-based 2, 1, 1, 2; zero end taps dropped.
    weights, indices = contributions(4, 8, 2.0)
    assert weights.shape == (8, 4)
    np.testing.assert_allclose(weights[0], [-0.0234375, 0.2265625, 0.8671875, -0.0703125], atol=1e-15)
    np.testing.assert_array_equal(indices[0], [1, 0, 0, 1])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-14)


def test_contributions_downscale_x2_antialiased() -> None:
    # 1/2: kernel widened to 8, h(x) = 0.5 cubic(0.5 x); output 1 centred at u = 2 - 0.5 = 1.5.
    weights, indices = contributions(8, 4, 0.5)
    d = 1.5 - np.arange(-3, 7)  # 1-based taps floor(1.5 - 4) = -3 .. +6
    raw = 0.5 * cubic(0.5 * d)
    want = raw[raw != 0] / raw.sum()
    np.testing.assert_allclose(weights[0], want, atol=1e-15)
    # Non-zero taps |d| < 4: 1-based -2..5, mirrored [1..8 8..1] -> 3 2 1 1 2 3 4 5.
    np.testing.assert_array_equal(indices[0], [2, 1, 0, 0, 1, 2, 3, 4])


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 0.7, 1.5, 2.0, 3.0, 4.0])
def test_constant_image_stays_constant(scale: float) -> None:
    flat = np.full((13, 10, 3), 0.37)
    out = imresize(flat, scale=scale)
    np.testing.assert_allclose(out, 0.37, atol=1e-12)
    assert (imresize(np.full((13, 10), 200, np.uint8), scale=scale) == 200).all()


def test_output_sizes_follow_matlab() -> None:
    img = np.zeros((10, 7))
    assert imresize(img, scale=1 / 3).shape == (4, 3)  # ceil(10/3), ceil(7/3)
    assert imresize(img, scale=2.5).shape == (25, 18)  # ceil(17.5)
    assert imresize(img, output_size=(5, 21)).shape == (5, 21)
    with pytest.raises(ValueError):
        imresize(img)


def test_mirror_symmetry_channels_and_dtypes() -> None:
    rng = np.random.default_rng(7)
    img = rng.random((12, 18, 3))  # multiples of 2 and 3: output grids symmetric
    for scale in (0.5, 1 / 3, 2.0, 3.0):
        out = imresize(img, scale=scale)
        np.testing.assert_allclose(imresize(img[:, ::-1], scale=scale), out[:, ::-1], atol=1e-12)
        np.testing.assert_allclose(imresize(img[::-1], scale=scale), out[::-1], atol=1e-12)
        np.testing.assert_allclose(imresize(img[:, :, 1], scale=scale), out[:, :, 1], atol=1e-12)
    u8 = (img * 255).astype(np.uint8)
    assert imresize(u8, scale=0.5).dtype == np.uint8
    assert imresize(u8.astype(np.float32), scale=0.5).dtype == np.float64


def test_linear_ramp_is_reproduced_inside() -> None:
    # Cubic convolution reproduces linear functions away from the mirrored borders.
    ramp = np.tile(np.arange(40, dtype=np.float64), (6, 1))
    out = imresize(ramp, output_size=(6, 80))
    centres = (np.arange(1, 81) / 2 + 0.25) - 1  # 0-based input coordinate of each output pixel
    np.testing.assert_allclose(out[:, 4:-4], np.tile(centres[4:-4], (6, 1)), atol=1e-12)


def test_bicubic_lr_checks_input() -> None:
    with pytest.raises(ValueError, match="modcrop"):
        bicubic_lr(np.zeros((10, 9, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="uint8"):
        bicubic_lr(np.zeros((8, 8, 3), np.float32), 2)


def read_u8(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        arr = np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
    return arr[:, :, None] if arr.ndim == 2 else arr


@pytest.mark.shared_data
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_bicubic_lr_matches_matlab_reference_files(shared_data: Path, set_name: str, scale: int) -> None:
    root = shared_data / "benchmarks" / set_name
    hr_paths = sorted((root / "HR").glob("*.png"))
    assert hr_paths
    total = equal = 0
    worst = 0
    for hr_path in hr_paths:
        hr = modcrop(read_u8(hr_path), scale)
        ref = read_u8(root / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        ours = bicubic_lr(hr, scale)
        assert ours.shape == ref.shape, hr_path.name
        diff = np.abs(ours.astype(np.int16) - ref)
        total += diff.size
        equal += int((diff == 0).sum())
        worst = max(worst, int(diff.max()))
    percent = 100.0 * equal / total
    print(f"{set_name} x{scale}: {percent:.4f}% of {total} values identical, max |diff| {worst}")
    assert percent >= 99.9
    assert worst <= 1
