"""srq.imaging.datasets: modcrop, EDSR/BasicSR and flat folders, reference LR use, errors, builtin dispatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from srq.errors import SrqError
from srq.imaging.datasets import BenchmarkSet, modcrop, open_dataset
from srq.imaging.io import write_image
from srq.imaging.resize import bicubic_lr

RNG = np.random.default_rng(5)


def rgb8(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_modcrop_keeps_top_left() -> None:
    img = np.arange(7 * 10).reshape(7, 10)
    np.testing.assert_array_equal(modcrop(img, 3), img[:6, :9])
    assert modcrop(np.zeros((8, 8, 3)), 4).shape == (8, 8, 3)


def test_benchmark_layout_uses_reference_lr_when_present(tmp_path: Path) -> None:
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    b_hr, a_hr = rgb8(11, 9), rgb8(8, 6)
    PILImage.fromarray(b_hr).save(tmp_path / "HR" / "b.png")
    PILImage.fromarray(a_hr).save(tmp_path / "HR" / "a.png")
    marker = np.full((5, 4, 3), 7, np.uint8)  # not what bicubic would give: proves the file is used
    PILImage.fromarray(marker).save(tmp_path / "LR_bicubic" / "X2" / "bx2.png")

    data = open_dataset(str(tmp_path), 2)
    assert isinstance(data, BenchmarkSet) and len(data) == 2
    names = [s.name for s in data]
    assert names == ["a", "b"]
    a, b = data[0], data[1]
    np.testing.assert_array_equal(a.hr, a_hr)
    np.testing.assert_array_equal(a.lr, bicubic_lr(a_hr, 2))
    np.testing.assert_array_equal(b.hr, b_hr[:10, :8])
    np.testing.assert_array_equal(b.lr, marker)


def test_flat_folder_gray_and_16bit_inputs(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (6, 6), dtype=np.uint8)
    PILImage.fromarray(gray).save(tmp_path / "g.png")
    deep = RNG.integers(0, 256, (6, 6, 3)).astype(np.uint16) * 257  # exact 8-bit values in 16 bits
    write_image(tmp_path / "d.tif", deep, bit_depth=16)
    (tmp_path / "notes.txt").write_text("ignored")
    data = open_dataset(str(tmp_path), 3)
    assert [s.name for s in data] == ["d", "g"]
    np.testing.assert_array_equal(data[0].hr, (deep // 257).astype(np.uint8))
    g = data[1]
    assert g.hr.shape == (6, 6, 3) and g.lr.shape == (2, 2, 3)
    np.testing.assert_array_equal(g.hr, np.repeat(gray[:, :, None], 3, axis=2))


def test_alpha_is_dropped_with_a_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "t.png", rgb8(4, 4), alpha=np.zeros((4, 4), np.uint8))
    with pytest.warns(UserWarning, match="alpha channel dropped"):
        open_dataset(str(tmp_path), 2)[0]


def test_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(SrqError, match="does not exist") as err:
        open_dataset(str(tmp_path / "nope"), 2)
    assert "nope" in str(err.value)
    with pytest.raises(SrqError, match="no images"):
        open_dataset(str(tmp_path), 2)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    data = open_dataset(str(tmp_path), 2)
    with pytest.raises(SrqError, match=r"bad\.png"):
        data[0]
    with pytest.raises(SrqError, match="positive integer"):
        open_dataset(str(tmp_path), 0)


def test_wrong_reference_lr_size_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X4").mkdir(parents=True)
    PILImage.fromarray(rgb8(16, 16)).save(tmp_path / "HR" / "x.png")
    PILImage.fromarray(rgb8(5, 4)).save(tmp_path / "LR_bicubic" / "X4" / "xx4.png")
    with pytest.raises(SrqError, match=r"xx4\.png: LR size 4x5 != .*4x4"):
        open_dataset(str(tmp_path), 4)[0]


def test_builtin_specs_dispatch_to_builtin_module() -> None:
    with pytest.raises(SrqError, match="builtin:no-such-set"):
        open_dataset("builtin:no-such-set", 2)


@pytest.mark.shared_data
def test_set14_x3_with_grayscale_bridge(shared_data: Path) -> None:
    data = open_dataset(str(shared_data / "benchmarks" / "Set14"), 3)
    assert len(data) == 14
    names = [p.stem for p in data.hr_paths]
    assert names == sorted(names) and "bridge" in names
    bridge = data[names.index("bridge")]
    assert bridge.hr.shape == (510, 510, 3) and bridge.lr.shape == (170, 170, 3)
    assert (bridge.hr[:, :, 0] == bridge.hr[:, :, 2]).all()
    np.testing.assert_array_equal(bridge.lr, bicubic_lr(bridge.hr, 3))
