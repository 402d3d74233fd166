"""Image files in and out: PNG, JPEG, BMP, TIFF; 8- and 16-bit; gray, RGB, with or without alpha.

In memory an image is ``Image.pixels`` (H, W, C) float32 in [0, 1] with C = 1 (gray) or
3 (RGB), ``alpha`` (H, W) float32 in [0, 1] or None, and the file's ``bit_depth`` (8|16).
Integer samples map to floats as ``v / (2**bit_depth - 1)``, exactly invertible.

Reading, per case (anything else -> ``SrqError`` naming the file and the cause):

=========================  ===========================================================
PNG 8-bit                  Pillow: L, LA, RGB, RGBA; palette -> RGB (RGBA if it has
                           transparency); 1-bit -> gray.
PNG 16-bit (any layout)    pypng: Pillow 13 silently truncates 16-bit RGB/RGBA/LA PNGs
                           to 8 bits, so every 16-bit PNG goes through pypng (tRNS
                           becomes alpha).
JPEG                       Pillow, 8-bit gray or RGB (CMYK/YCbCr converted to RGB).
                           EXIF orientation is not applied: pixels as stored.
BMP                        Pillow, 8-bit gray/palette/RGB (RGBA if the file has alpha).
TIFF 8-bit                 Pillow (1-bit -> gray).
TIFF 16-bit (any layout)   tifffile: Pillow truncates 16-bit colour TIFFs to 8 bits
                           and cannot open 16-bit gray+alpha ones.
=========================  ===========================================================

Writing (``write_image``) is atomic (temp file in the same folder, then rename):
PNG 8 (Pillow) and 16 (pypng) with or without alpha; TIFF 8 (Pillow) and 16 (tifffile,
zlib) with or without alpha; JPEG 8-bit gray/RGB (quality 95, 4:4:4, no alpha);
BMP 8-bit gray/RGB (no alpha: Pillow reads RGBA BMPs back without it).

Alpha: ``pixels`` never holds alpha. Whoever uses the colour of an image that has a
non-opaque alpha and ignores the alpha must say so: ``Image.rgb()`` warns
(``UserWarning`` naming the file) unless called with ``alpha_handled=True``.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from srq.errors import SrqError

SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = frozenset(SUFFIX_FORMATS)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic, BigTIFF


@dataclass(frozen=True)
class Image:
    """A decoded image: ``pixels`` (H, W, C) float32 in [0, 1], C = 1 or 3; ``alpha`` (H, W) or None."""

    pixels: np.ndarray
    bit_depth: int
    alpha: np.ndarray | None
    path: Path | None = None

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    def rgb(self, alpha_handled: bool = False) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1]; gray replicated to 3 channels (as cv2.IMREAD_COLOR).

        Warns when the image has a non-opaque alpha, unless ``alpha_handled``.
        """
        if not alpha_handled and self.alpha is not None and float(self.alpha.min()) < 1.0:
            warnings.warn(f"{self.path}: has transparency; alpha channel dropped", UserWarning, stacklevel=2)
        if self.pixels.shape[2] == 3:
            return self.pixels
        return np.repeat(self.pixels, 3, axis=2)


def to_uint8(img01: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> uint8 exactly as BasicSR's ``tensor2img``: clip, x255 in float32, round.

    ``tensor2img`` multiplies a float32 numpy array by 255 and calls ``ndarray.round()``,
    i.e. round half to EVEN (not MATLAB's half-up); ties are rare but this matches it.
    """
    x = np.clip(np.asarray(img01, dtype=np.float32), 0.0, 1.0)
    return np.round(x * np.float32(255.0)).astype(np.uint8)


def to_uint16(img01: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> uint16: clip, x65535 in float64, round half to even."""
    x = np.clip(np.asarray(img01, dtype=np.float64), 0.0, 1.0)
    return np.round(x * 65535.0).astype(np.uint16)


def _from_integers(samples: np.ndarray, bit_depth: int, has_alpha: bool, path: Path) -> Image:
    """(H, W) or (H, W, K) integer samples -> Image; the last channel is alpha if ``has_alpha``."""
    x = samples.astype(np.float32) / np.float32(2**bit_depth - 1)
    if x.ndim == 2:
        x = x[:, :, None]
    alpha = None
    if has_alpha:
        alpha, x = x[:, :, -1].copy(), x[:, :, :-1]
    if x.shape[2] not in (1, 3):
        raise SrqError(f"{path}: unsupported channel count {x.shape[2]}")
    return Image(pixels=np.ascontiguousarray(x), bit_depth=bit_depth, alpha=alpha, path=path)


def _png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise SrqError(f"{path}: truncated or corrupt PNG header")
    bit_depth, colour_type = struct.unpack(">BB", head[24:26])
    return bit_depth, colour_type


def _read_png16(path: Path) -> Image:
    import png  # pypng: the only reader here that keeps 16-bit colour PNG samples

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, OSError, ValueError, EOFError) as e:
        raise SrqError(f"{path}: cannot decode 16-bit PNG ({e})") from e
    planes = info["planes"]
    samples = samples.reshape(height, width, planes)
    # asDirect lowers the depth to the sBIT significant bits if present: normalise by that.
    return replace(_from_integers(samples, info["bitdepth"], info["alpha"], path), bit_depth=16)


def _read_tiff16(path: Path) -> Image | None:
    """Decode a 16-bit TIFF with tifffile; None if the file's samples are not 16-bit."""
    import tifffile  # Pillow truncates 16-bit colour TIFFs to 8 bits and cannot open gray+alpha

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.bitspersample != 16:
                return None
            samples = page.asarray()
            extra = len(page.extrasamples)
    except Exception as e:  # tifffile raises many exception types on corrupt input
        raise SrqError(f"{path}: cannot decode TIFF ({e})") from e
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    if samples.dtype != np.uint16 or samples.ndim not in (2, 3) or channels - extra not in (1, 3) or extra > 1:
        raise SrqError(f"{path}: unsupported 16-bit TIFF layout {samples.shape} {samples.dtype}")
    return _from_integers(samples, 16, extra == 1, path)


def _pil_to_image(im: PILImage.Image, path: Path) -> Image:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _from_integers(np.asarray(im).astype(np.uint16), 16, False, path)
    if mode == "1":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        im = im.convert("RGB")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise SrqError(f"{path}: unsupported pixel mode {mode} (need 8/16-bit gray or RGB, optional alpha)")
    return _from_integers(np.asarray(im), 8, im.mode.endswith("A"), path)


def read_image(path: str | os.PathLike) -> Image:
    """Decode a PNG/JPEG/BMP/TIFF file (see the module table). Errors -> SrqError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SrqError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(PNG_SIGNATURE) and _png_header(path)[0] == 16:
            return _read_png16(path)
        if magic[:4] in TIFF_SIGNATURES:
            image = _read_tiff16(path)
            if image is not None:
                return image
        with PILImage.open(path) as im:
            fmt = im.format
            if fmt == "MPO":
                fmt = "JPEG"
            if fmt not in ("PNG", "JPEG", "BMP", "TIFF"):
                raise SrqError(f"{path}: unsupported image format {fmt} (PNG, JPEG, BMP, TIFF)")
            im.load()
            return _pil_to_image(im, path)
    except SrqError:
        raise
    except UnidentifiedImageError as e:
        raise SrqError(f"{path}: not a readable image (unknown or corrupt format)") from e
    except (OSError, ValueError, SyntaxError, EOFError, PILImage.DecompressionBombError) as e:
        raise SrqError(f"{path}: cannot decode image ({e})") from e


def _quantize(pixels: np.ndarray, bit_depth: int, what: str, path: Path) -> np.ndarray:
    """Float [0, 1] -> integers (to_uint8 / to_uint16); integer input of the right dtype passes."""
    pixels = np.asarray(pixels)
    want = np.uint8 if bit_depth == 8 else np.uint16
    if pixels.dtype == want:
        return pixels
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"{path}: {what} must be float in [0, 1] or {np.dtype(want).name}, got {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise ValueError(f"{path}: {what} contains NaN or infinity")
    return to_uint8(pixels) if bit_depth == 8 else to_uint16(pixels)


def _encode(tmp: Path, fmt: str, samples: np.ndarray, bit_depth: int, has_alpha: bool) -> None:
    """Write (H, W, K) integer samples (last channel alpha if ``has_alpha``) to ``tmp``."""
    height, width, planes = samples.shape
    if fmt == "PNG" and bit_depth == 16:
        import png

        writer = png.Writer(width, height, greyscale=planes - has_alpha == 1, alpha=has_alpha, bitdepth=16)
        with open(tmp, "wb") as f:
            writer.write_array(f, samples.reshape(-1))
    elif fmt == "TIFF" and bit_depth == 16:
        import tifffile

        photometric = "minisblack" if planes - has_alpha == 1 else "rgb"
        tifffile.imwrite(tmp, samples.squeeze(2) if planes == 1 else samples, photometric=photometric,
                         extrasamples=["unassalpha"] if has_alpha else None, compression="zlib")
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes]
        im = PILImage.fromarray(samples.squeeze(2) if planes == 1 else samples, mode)
        options = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
        im.save(tmp, format=fmt, **options)


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    bit_depth: int = 8,
    alpha: np.ndarray | None = None,
) -> Path:
    """Atomically write ``pixels`` (H, W), (H, W, 1) or (H, W, 3) to ``path``; returns the path.

    ``pixels``/``alpha``: float in [0, 1] (clipped, rounded as ``to_uint8``/``to_uint16``) or
    already uint8 (bit_depth 8) / uint16 (bit_depth 16). The format comes from the suffix.
    Unsupported combinations (JPEG/BMP with alpha or 16 bits) -> SrqError.
    """
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SrqError(f"{path}: unsupported output suffix (use one of {', '.join(sorted(SUFFIX_FORMATS))})")
    if bit_depth not in (8, 16):
        raise SrqError(f"{path}: bit depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt in ("JPEG", "BMP"):
        raise SrqError(f"{path}: {fmt} stores 8-bit samples only; use .png or .tif for 16-bit")
    if alpha is not None and fmt in ("JPEG", "BMP"):
        raise SrqError(f"{path}: {fmt} cannot store alpha; use .png or .tif")
    samples = _quantize(pixels, bit_depth, "pixels", path)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    if samples.ndim != 3 or samples.shape[2] not in (1, 3):
        raise ValueError(f"{path}: pixels must be (H, W), (H, W, 1) or (H, W, 3), got {samples.shape}")
    if alpha is not None:
        alpha_samples = _quantize(alpha, bit_depth, "alpha", path)
        if alpha_samples.shape != samples.shape[:2]:
            raise ValueError(f"{path}: alpha shape {alpha_samples.shape} != image {samples.shape[:2]}")
        samples = np.concatenate([samples, alpha_samples[:, :, None]], axis=2)
    if not path.parent.is_dir():
        raise SrqError(f"{path}: output folder {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _encode(tmp, fmt, np.ascontiguousarray(samples), bit_depth, alpha is not None)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
