"""Tiled inference equals whole-image inference when the overlap covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest

from srq.errors import SrqError
from srq.runtime.ort_engine import OrtEngine, OrtOptions
from srq.runtime.tiling import tile_layout, upscale
from test_runtime_nets import make_sr_onnx

OPTS = OrtOptions(threads=1, save_optimized=False)


def test_tile_layout_partitions_the_axis():
    # worked by hand: tile 4, overlap 1 -> step 2, starts 0,2,4,6 (last ends at 10),
    # cuts in the middle of each 2-pixel overlap
    assert tile_layout(10, 4, 1) == [(0, 0, 3), (2, 3, 5), (4, 5, 7), (6, 7, 10)]
    # last tile shifted back to end at the edge; its overlap with the previous is wider
    assert tile_layout(11, 6, 1) == [(0, 0, 5), (4, 5, 7), (5, 7, 11)]
    assert tile_layout(5, 8, 2) == [(0, 0, 5)]
    with pytest.raises(SrqError, match="too large"):
        tile_layout(20, 6, 3)


@pytest.mark.parametrize("depth", [2, 4])
def test_tiled_equals_untiled_when_overlap_covers_receptive_field(tmp_path, depth):
    h, w = 37, 53
    img = np.random.default_rng(3).random((h, w, 3), np.float32)
    with OrtEngine(make_sr_onnx(tmp_path / "full.onnx", (h, w), depth=depth), OPTS) as full, \
         OrtEngine(make_sr_onnx(tmp_path / "tile.onnx", (16, 16), depth=depth), OPTS) as tiled:
        ref = full.run(img.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
        exact = upscale(tiled, img, overlap=depth)
        seams = upscale(tiled, img, overlap=depth - 1)
    assert exact.shape == ref.shape == (2 * h, 2 * w, 3)
    assert np.abs(exact - ref).max() < 1e-4
    assert np.abs(seams - ref).max() > 1e-3  # too little context: seams are measurable


def test_y_only_engine_and_image_smaller_than_tile(tmp_path):
    """C = 1 works on (H, W); a dimension smaller than the tile is padded, exact away from the pad."""
    h, w, depth = 10, 23, 2
    img = np.random.default_rng(4).random((h, w), np.float32)
    with OrtEngine(make_sr_onnx(tmp_path / "f.onnx", (h, w), 1, 3, depth), OPTS) as full, \
         OrtEngine(make_sr_onnx(tmp_path / "t.onnx", (16, 16), 1, 3, depth), OPTS) as tiled:
        ref = full.run(img[None, None])[0, 0]
        out = upscale(tiled, img, overlap=depth)
    assert out.shape == (3 * h, 3 * w)
    # rows are padded from 10 to 16: rows farther than the receptive field from the pad are exact
    np.testing.assert_allclose(out[:3 * (h - depth)], ref[:3 * (h - depth)], atol=1e-4)


def test_channel_mismatch_is_a_clear_error(tmp_path):
    with OrtEngine(make_sr_onnx(tmp_path / "y.onnx", (8, 8), channels=1), OPTS) as eng:
        with pytest.raises(SrqError, match="1 channel"):
            upscale(eng, np.zeros((9, 9, 3), np.float32))
