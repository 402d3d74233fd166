"""LR calibration crops: shapes, values taken from the real LR images, seeding, Y-only input, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srq.calib import calibration_crops
from srq.errors import SrqError
from srq.imaging.color import rgb2y
from srq.imaging.datasets import open_dataset


def _found_in(crop: np.ndarray, image: np.ndarray) -> bool:
    """Whether ``crop`` (h, w, c) is a window of ``image`` up to horizontal / vertical flips."""
    h, w = crop.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(image, (h, w), axis=(0, 1)).transpose(0, 1, 3, 4, 2)
    return any(np.abs(windows - c).max(axis=(2, 3, 4)).min() < 1e-6
               for c in (crop, crop[:, ::-1], crop[::-1], crop[::-1, ::-1]))


def test_rgb_crops_are_windows_of_the_lr_images_spread_over_the_set():
    crops = calibration_crops("builtin:calib", 4, count=12, size=24, seed=3)
    assert crops.shape == (12, 3, 24, 24) and crops.dtype == torch.float32
    dataset = open_dataset("builtin:calib", 4)
    for i in (0, 3, 11):  # crop i comes from image i % 10
        lr = dataset[i % len(dataset)].lr.astype(np.float32) / 255.0
        assert _found_in(crops[i].permute(1, 2, 0).numpy(), lr)
    assert torch.equal(crops, calibration_crops("builtin:calib", 4, count=12, size=24, seed=3))
    assert not torch.equal(crops, calibration_crops("builtin:calib", 4, count=12, size=24, seed=4))


def test_y_only_models_get_bt601_y_over_255(shared_data):
    set5 = str(shared_data / "benchmarks" / "Set5")
    y = calibration_crops(set5, 2, count=2, size=16, in_channels=1, seed=0, flips=False)
    assert y.shape == (2, 1, 16, 16)
    lr = open_dataset(set5, 2)[1].lr.astype(np.float64) / 255.0
    assert _found_in(y[1].permute(1, 2, 0).numpy(), (rgb2y(lr) / 255.0).astype(np.float32)[..., None])
    assert 16 / 255 - 1e-6 <= float(y.min()) and float(y.max()) <= 235 / 255 + 1e-6


def test_crop_larger_than_an_image_is_refused(shared_data):
    with pytest.raises(SrqError, match=r"Set5: image .* smaller than the 200x200 crop"):
        calibration_crops(str(shared_data / "benchmarks" / "Set5"), 2, count=5, size=200)
    with pytest.raises(SrqError, match="at least one crop"):
        calibration_crops("builtin:calib", 2, count=0, size=8)
