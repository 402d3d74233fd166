"""`srq upscale` end to end in a subprocess: folders and files, RGB / gray / alpha / 16-bit, Y-only engines, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from srq.imaging.color import rgb2y, rgb2ycbcr
from srq.imaging.io import read_image, write_image
from srq.imaging.resize import imresize
from srq.runtime.ort_engine import OrtEngine, OrtOptions
from test_runtime_nets import make_sr_onnx

DEPTH = 3


def srq(*args):
    return subprocess.run([sys.executable, "-m", "srq.pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def untiled(img: np.ndarray, folder, channels=3) -> np.ndarray:
    """The same network exported at the image's own size, run in one piece: (2H, 2W, C)."""
    h, w = img.shape[:2]
    net = make_sr_onnx(folder / f"full{h}x{w}c{channels}.onnx", (h, w), channels, depth=DEPTH)
    x = img.reshape(h, w, channels).transpose(2, 0, 1)[None].astype(np.float32)
    with OrtEngine(net, OrtOptions(threads=1, save_optimized=False)) as eng:
        return eng.run(x)[0].transpose(1, 2, 0)


def test_upscale_folder_and_files_rgb_gray_alpha_16bit(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    rgb = rng.random((29, 41, 3))
    write_image(src / "rgb.png", rgb)
    write_image(src / "gray.png", rng.random((20, 18)))
    write_image(tmp_path / "alpha.png", rgb, alpha=np.linspace(0, 1, 29 * 41).reshape(29, 41))
    write_image(tmp_path / "deep.png", rgb, bit_depth=16)
    engine = make_sr_onnx(tmp_path / "m.onnx", (16, 16), depth=DEPTH)
    r = srq("upscale", engine, src, tmp_path / "alpha.png", tmp_path / "deep.png",
            "--out", tmp_path / "out", "--tile-overlap", DEPTH, "--threads", 1)
    assert r.returncode == 0, r.stderr
    assert "alpha.png: has an alpha channel" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.png", "deep.png", "gray.png", "rgb.png"]

    out = read_image(tmp_path / "out" / "rgb.png")
    assert out.pixels.shape == (58, 82, 3) and out.bit_depth == 8 and out.alpha is None
    ref = np.clip(untiled(read_image(src / "rgb.png").pixels, tmp_path), 0, 1)
    assert np.abs(out.pixels - ref).max() <= 0.5 / 255 + 1e-6  # tiled = untiled, then rounded

    deep = read_image(tmp_path / "out" / "deep.png")
    assert deep.bit_depth == 16 and np.abs(deep.pixels - ref).max() < 2 / 255

    gray = read_image(tmp_path / "out" / "gray.png")
    assert gray.pixels.shape == (40, 36, 1)
    g_in = read_image(src / "gray.png").pixels
    g_ref = np.clip(untiled(np.repeat(g_in, 3, axis=2), tmp_path).mean(axis=2), 0, 1)
    assert np.abs(gray.pixels[:, :, 0] - g_ref).max() <= 0.5 / 255 + 1e-6

    alpha = read_image(tmp_path / "out" / "alpha.png")
    assert alpha.alpha is not None and alpha.alpha.shape == (58, 82)
    assert alpha.alpha[0, 0] < 0.05 and alpha.alpha[-1, -1] > 0.95


def test_y_only_engine_gets_luma_and_keeps_colour(tmp_path):
    yy, xx = np.mgrid[0:21, 0:30]
    rgb = np.stack([0.5 + 0.2 * np.sin(xx / 3), 0.5 + 0.2 * np.cos(yy / 2), 0.5 + 0.1 * np.sin((xx + yy) / 4)], 2)
    write_image(tmp_path / "c.png", rgb)
    engine = make_sr_onnx(tmp_path / "y.onnx", (16, 16), channels=1, depth=DEPTH)
    r = srq("upscale", engine, tmp_path / "c.png", "--out", tmp_path / "o", "--tile-overlap", DEPTH)
    assert r.returncode == 0, r.stderr
    out = read_image(tmp_path / "o" / "c.png").pixels
    y_in = rgb2y(read_image(tmp_path / "c.png").pixels) / 255
    y_ref = untiled(y_in.astype(np.float32)[:, :, None], tmp_path, channels=1)[:, :, 0]
    y_out = rgb2y(out) / 255
    inside = ((out > 0) & (out < 1)).all(axis=2)  # where the RGB output was not clipped
    err = np.abs(y_out - y_ref)[inside]
    assert inside.mean() > 0.9
    assert err.mean() < 0.5 / 255 and err.max() < 2 / 255
    cbcr_ref = imresize(rgb2ycbcr(read_image(tmp_path / "c.png").pixels)[:, :, 1:], output_size=(42, 60))
    assert np.abs(rgb2ycbcr(out)[:, :, 1:] - cbcr_ref)[inside].max() < 2.0  # 0..255 scale


def test_bad_inputs_are_clear_errors(tmp_path):
    engine = make_sr_onnx(tmp_path / "m.onnx", (16, 16))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = srq("upscale", engine, tmp_path / "missing.png", "--out", tmp_path / "o")
    assert r.returncode == 2 and "missing.png: no such file or folder" in r.stderr
    r = srq("upscale", engine, tmp_path / "broken.png", "--out", tmp_path / "o")
    assert r.returncode == 2 and "broken.png" in r.stderr
    assert not list((tmp_path / "o").iterdir())
    (tmp_path / "notonnx.onnx").write_bytes(b"hello")
    r = srq("upscale", tmp_path / "notonnx.onnx", tmp_path / "broken.png", "--out", tmp_path / "o")
    assert r.returncode == 2 and "notonnx.onnx: ONNX Runtime cannot load it" in r.stderr
