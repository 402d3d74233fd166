"""srq.imaging.io: every format/depth/layout round trip, checked against independent codecs."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from srq.errors import SrqError
from srq.imaging.io import read_image, to_uint8, to_uint16, write_image

RNG = np.random.default_rng(1234)
# PNG colour types: planes -> type (gray, gray+alpha, RGB, RGBA).
PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png(samples: np.ndarray, bit_depth: int) -> bytes:
    """Independent PNG encoder (spec, section 9): rows use filter types 0..4 in turn."""
    h, w, planes = samples.shape
    dtype = ">u2" if bit_depth == 16 else "u1"
    bpp = planes * bit_depth // 8
    raw, prev = bytearray(), bytes(w * bpp)
    for y in range(h):
        line = samples[y].astype(dtype).tobytes()
        ftype = y % 5
        out = bytearray()
        for i, x in enumerate(line):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]
            out.append((x - pred) % 256)
        raw += bytes([ftype]) + out
        prev = line

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, PNG_COLOUR_TYPE[planes], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def decode_png(data: bytes) -> tuple[np.ndarray, int, int]:
    """Independent PNG decoder for non-interlaced files: (samples (H, W, planes), bit depth, colour type)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    planes = {v: k for k, v in PNG_COLOUR_TYPE.items()}[ctype]
    bpp = planes * depth // 8
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]) % 256
        rows.append(bytes(line))
        prev = line
    samples = np.frombuffer(b"".join(rows), dtype=">u2" if depth == 16 else "u1").reshape(h, w, planes)
    return samples.astype(np.uint16 if depth == 16 else np.uint8), depth, ctype


def random_samples(h: int, w: int, planes: int, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return RNG.integers(0, 2**bit_depth, (h, w, planes)).astype(dtype)


def as_integers(x: np.ndarray, bit_depth: int) -> np.ndarray:
    return np.round(x.astype(np.float64) * (2**bit_depth - 1)).astype(np.uint8 if bit_depth == 8 else np.uint16)


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("planes", [1, 2, 3, 4])
def test_reads_independently_encoded_png_exactly(tmp_path: Path, planes: int, bit_depth: int) -> None:
    samples = random_samples(6, 11, planes, bit_depth)
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(samples, bit_depth))
    image = read_image(path)
    colour = planes - (planes in (2, 4))
    assert image.bit_depth == bit_depth and image.pixels.dtype == np.float32
    assert image.pixels.shape == (6, 11, colour)
    np.testing.assert_array_equal(as_integers(image.pixels, bit_depth), samples[:, :, :colour])
    if planes in (2, 4):
        np.testing.assert_array_equal(as_integers(image.alpha, bit_depth), samples[:, :, -1])
    else:
        assert image.alpha is None


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("planes", [1, 2, 3, 4])
def test_written_png_decodes_independently(tmp_path: Path, planes: int, bit_depth: int) -> None:
    samples = random_samples(5, 7, planes, bit_depth)
    has_alpha = planes in (2, 4)
    colour = samples[:, :, : planes - has_alpha]
    path = write_image(tmp_path / "y.png", colour, bit_depth, samples[:, :, -1] if has_alpha else None)
    decoded, depth, ctype = decode_png(path.read_bytes())
    assert (depth, ctype) == (bit_depth, PNG_COLOUR_TYPE[planes])
    np.testing.assert_array_equal(decoded, samples)


@pytest.mark.parametrize("planes", [1, 2, 3, 4])
def test_tiff16_both_directions_against_tifffile(tmp_path: Path, planes: int) -> None:
    samples = random_samples(5, 7, planes, 16)
    has_alpha = planes in (2, 4)
    ours = write_image(tmp_path / "ours.tif", samples[:, :, : planes - has_alpha], 16, samples[:, :, -1] if has_alpha else None)
    np.testing.assert_array_equal(tifffile.imread(ours).reshape(5, 7, planes), samples)

    theirs = tmp_path / "theirs.tif"
    photometric = "rgb" if planes >= 3 else "minisblack"
    data = samples[:, :, 0] if planes == 1 else samples
    tifffile.imwrite(theirs, data, photometric=photometric, extrasamples=["unassalpha"] if has_alpha else None)
    image = read_image(theirs)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(as_integers(image.pixels, 16), samples[:, :, : planes - has_alpha])
    assert (image.alpha is not None) == has_alpha


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
@pytest.mark.parametrize("planes", [1, 3])
def test_8bit_write_matches_pillow_reading(tmp_path: Path, suffix: str, planes: int) -> None:
    samples = random_samples(6, 9, planes, 8)
    path = write_image(tmp_path / f"z{suffix}", samples, 8)
    with PILImage.open(path) as im:
        assert im.mode == ("L" if planes == 1 else "RGB")
        np.testing.assert_array_equal(np.asarray(im).reshape(6, 9, planes), samples)
    image = read_image(path)
    assert image.bit_depth == 8 and image.alpha is None
    np.testing.assert_array_equal(as_integers(image.pixels, 8), samples)


@pytest.mark.parametrize("planes", [1, 3])
def test_jpeg_is_8bit_gray_or_rgb(tmp_path: Path, planes: int) -> None:
    flat = np.full((16, 16, planes), 0.4, dtype=np.float32)
    image = read_image(write_image(tmp_path / "j.jpg", flat))
    assert image.bit_depth == 8 and image.pixels.shape == (16, 16, planes) and image.alpha is None
    assert np.abs(as_integers(image.pixels, 8).astype(int) - 102).max() <= 1  # 0.4 * 255 = 102


def test_palette_with_transparency_and_1bit(tmp_path: Path) -> None:
    pal = PILImage.new("P", (4, 3))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png", transparency=1)
    image = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(as_integers(image.pixels, 8)[1, 1], [0, 0, 255])
    np.testing.assert_array_equal(as_integers(image.pixels, 8)[0, 0], [255, 0, 0])
    assert image.alpha[1, 1] == 0.0 and image.alpha[0, 0] == 1.0

    PILImage.new("1", (5, 2), 1).save(tmp_path / "b.png")
    image = read_image(tmp_path / "b.png")
    assert image.pixels.shape == (2, 5, 1) and (image.pixels == 1.0).all()


def test_rgb_replicates_gray_and_warns_only_on_real_transparency(tmp_path: Path) -> None:
    gray = random_samples(3, 4, 1, 8)
    image = read_image(write_image(tmp_path / "g.png", gray))
    rgb = image.rgb()
    assert rgb.shape == (3, 4, 3) and (rgb == image.pixels).all()

    opaque = read_image(write_image(tmp_path / "o.png", gray, alpha=np.full((3, 4), 255, np.uint8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opaque.rgb()
    seethrough = read_image(write_image(tmp_path / "s.png", gray, alpha=np.zeros((3, 4), np.uint8)))
    with pytest.warns(UserWarning, match=r"s\.png.*alpha channel dropped"):
        seethrough.rgb()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seethrough.rgb(alpha_handled=True)


def test_to_uint8_matches_basicsr_tensor2img() -> None:
    # tensor2img: clamp to [0, 1], float32 * 255.0, ndarray.round() (half to even), astype(uint8).
    tie = np.float32(126.5) / np.float32(255.0)
    assert tie * np.float32(255.0) == np.float32(126.5)  # the premise: an exact tie in float32
    assert to_uint8(np.array([tie]))[0] == 126
    np.testing.assert_array_equal(to_uint8(np.array([-0.2, 0.0, 1 / 255, 0.5, 1.0, 3.0])), [0, 0, 1, 128, 255, 255])
    np.testing.assert_array_equal(to_uint16(np.array([0.0, 0.5, 1.0])), [0, 32768, 65535])


def test_write_replaces_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    write_image(path, np.zeros((2, 2, 3), np.uint8))
    write_image(path, np.ones((2, 2, 3), np.float32))
    assert (read_image(path).pixels == 1.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("x.gif", {}, "unsupported output suffix"),
        ("x.jpg", {"alpha": np.ones((2, 2))}, "cannot store alpha"),
        ("x.bmp", {"bit_depth": 16}, "8-bit samples only"),
        ("x.png", {"bit_depth": 12}, "bit depth must be 8 or 16"),
        ("missing/x.png", {}, "does not exist"),
    ],
)
def test_write_errors_name_the_file(tmp_path: Path, name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(SrqError, match=message) as err:
        write_image(tmp_path / name, np.zeros((2, 2, 3), np.float32), **kwargs)
    assert str(tmp_path / name) in str(err.value)
    assert not any(tmp_path.rglob("*.*"))


def test_read_errors_name_the_file_and_cause(tmp_path: Path) -> None:
    good8 = encode_png(random_samples(20, 20, 3, 8), 8)
    good16 = encode_png(random_samples(20, 20, 3, 16), 16)
    cases = {
        "missing.png": None,
        "garbage.png": b"definitely not an image",
        "trunc8.png": good8[: len(good8) // 2],
        "trunc16.png": good16[: len(good16) // 2],
        "header.png": good8[:20],
        "trunc.tif": None,
        "anim.gif": None,
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    tifffile.imwrite(tmp_path / "full.tif", random_samples(20, 20, 3, 16), photometric="rgb")
    (tmp_path / "trunc.tif").write_bytes((tmp_path / "full.tif").read_bytes()[:300])
    PILImage.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    expected = {
        "missing.png": "no such file",
        "garbage.png": "not a readable image",
        "trunc8.png": "cannot decode",
        "trunc16.png": "cannot decode 16-bit PNG",
        "header.png": "cannot decode|truncated",
        "trunc.tif": "cannot decode TIFF",
        "anim.gif": "unsupported image format GIF",
    }
    for name, message in expected.items():
        with pytest.raises(SrqError, match=message) as err:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), name
    with pytest.raises(SrqError, match="not a file"):
        read_image(tmp_path)
