"""srq.imaging.color: BT.601 studio-range values by hand, the inverse, and scikit-image's matrix."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2ycbcr as skimage_rgb2ycbcr

from srq.imaging.color import rgb2y, rgb2ycbcr, ycbcr2rgb


def test_primaries_by_hand() -> None:
    rgb = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    want = [
        [235.0, 128.0, 128.0],
        [16.0, 128.0, 128.0],
        [16 + 65.481, 128 - 37.797, 128 + 112.0],
        [16 + 128.553, 128 - 74.203, 128 - 93.786],
        [16 + 24.966, 128 + 112.0, 128 - 18.214],
    ]
    np.testing.assert_allclose(rgb2ycbcr(rgb), want, atol=1e-12)
    np.testing.assert_allclose(rgb2y(rgb), np.array(want)[:, 0], atol=1e-12)


def test_inverse_round_trip_and_skimage_agreement() -> None:
    rgb = np.random.default_rng(3).random((9, 8, 3))
    ycbcr = rgb2ycbcr(rgb)
    np.testing.assert_allclose(ycbcr2rgb(ycbcr), rgb, atol=1e-12)
    np.testing.assert_allclose(ycbcr, skimage_rgb2ycbcr(rgb), atol=1e-10)
    assert rgb2y(rgb).shape == (9, 8)
