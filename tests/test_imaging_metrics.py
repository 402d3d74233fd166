"""srq.imaging.metrics: hand-computed PSNR/SSIM, scikit-image agreement, published bicubic numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from srq.imaging.datasets import open_dataset
from srq.imaging.metrics import gaussian_window_1d, psnr, psnr_y, ssim_y, y_channel
from srq.imaging.resize import imresize


def gray_rgb(value: int, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    return np.full(shape + (3,), value, dtype=np.uint8)


def test_psnr_by_hand() -> None:
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0, abs=1e-12)
    assert psnr(np.zeros(3), np.full(3, 25.5), peak=255.0) == pytest.approx(20.0, abs=1e-12)
    assert psnr(np.ones(5), np.ones(5)) == math.inf
    # Gray levels 100 vs 110: Y differs by 219 * 10 / 255 everywhere.
    want = 20 * math.log10(255 / (219 * 10 / 255))
    assert psnr_y(gray_rgb(100), gray_rgb(110), crop_border=2) == pytest.approx(want, abs=1e-10)


def test_crop_border_excludes_the_border() -> None:
    hr = gray_rgb(90)
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255
    assert psnr_y(sr, hr, crop_border=3) == math.inf
    assert psnr_y(sr, hr, crop_border=2) < 20
    assert y_channel(hr, 3).shape == (18, 14)


def test_ssim_of_constant_images_by_hand() -> None:
    # Constant images: sigmas are 0, SSIM = (2 a b + C1) / (a^2 + b^2 + C1) with a, b the Y values.
    a, b = 16 + 219 * 100 / 255, 16 + 219 * 130 / 255
    c1 = (0.01 * 255) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim_y(gray_rgb(100), gray_rgb(130), crop_border=0) == pytest.approx(want, abs=1e-12)
    assert ssim_y(gray_rgb(77), gray_rgb(77), crop_border=4) == pytest.approx(1.0, abs=1e-15)


def test_gaussian_window() -> None:
    g = gaussian_window_1d()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(g, g[::-1], atol=0)
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)), rel=1e-14)


def test_ssim_matches_skimage_valid_region() -> None:
    # skimage pads by reflection, filters, then crops (win - 1) // 2 = 5 px before averaging:
    # the kept map entries only use interior windows, i.e. exactly the 'valid' map.
    rng = np.random.default_rng(11)
    hr = rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    theirs = structural_similarity(
        y_channel(sr, 2), y_channel(hr, 2), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim_y(sr, hr, crop_border=2) == pytest.approx(theirs, abs=1e-12)


def test_metric_input_checks() -> None:
    with pytest.raises(ValueError, match="uint8"):
        psnr_y(gray_rgb(1).astype(np.float32), gray_rgb(1).astype(np.float32), 0)
    with pytest.raises(ValueError, match="shape"):
        ssim_y(gray_rgb(1, (20, 20)), gray_rgb(1), 0)


# Bicubic baseline, Set5, MATLAB evaluation (EDSR / RCAN papers' tables): scale -> (PSNR, SSIM).
PUBLISHED_BICUBIC_SET5 = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


@pytest.mark.shared_data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_baseline_reproduces_published_set5(shared_data: Path, scale: int) -> None:
    data = open_dataset(str(shared_data / "benchmarks" / "Set5"), scale)
    psnrs, ssims = [], []
    for sample in data:
        sr = imresize(sample.lr, scale=scale)
        psnrs.append(psnr_y(sr, sample.hr, scale))
        ssims.append(ssim_y(sr, sample.hr, scale))
    print(f"Set5 x{scale} bicubic: PSNR {np.mean(psnrs):.4f} SSIM {np.mean(ssims):.4f}")
    want_psnr, want_ssim = PUBLISHED_BICUBIC_SET5[scale]
    # MATLAB rounds Y to uint8 before scoring; BasicSR (and we) do not: a few hundredths.
    assert np.mean(psnrs) == pytest.approx(want_psnr, abs=0.02)
    assert np.mean(ssims) == pytest.approx(want_ssim, abs=0.0012)
