"""Safe image reading through Wand (ImageMagick): every image enters jaxdenoise here.

Guards, in the order they run, so that no file can make ImageMagick do anything but decode a raster:
1. Magic bytes: only PNG, JPEG, TIFF, BMP, WebP, PNM (PBM/PGM/PPM) and GIF are accepted, and the coder is
   forced to the one the bytes name (no PS/PDF/SVG/MSL/text coders, no guessing from the file name).
2. Resource limits (memory, map, disk, width, height) are set once per process, so no file can make
   ImageMagick allocate gigabytes.
3. ``ping`` reads only the header: images under ``MIN_SIDE`` px or over ``MAX_PIXELS`` are rejected before
   any pixel is decoded.
4. Decode, first frame only (GIF, multi-page TIFF), EXIF orientation applied, CMYK/grey/palette converted to
   sRGB, alpha composited over white, any bit depth reduced to 8 bits.

Wand needs ImageMagick's shared library, so ``wand`` is imported lazily: modules that only read prepared
stores (the GPU machines have no ImageMagick) never touch it.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

MAX_PIXELS = 40_000_000  # header claims above this are rejected before decoding
MIN_SIDE = 8
_LIMITS = {  # ImageMagick resource limits, bytes or pixels
    "memory": 512 * 2**20,
    "map": 1024 * 2**20,
    "disk": 2048 * 2**20,
    "width": 65_535,
    "height": 65_535,
    "area": 64_000_000,
}


class ImageReadError(ValueError):
    """A file that is not a readable raster image; the message is a one-line reason."""


def sniff_format(head: bytes) -> Optional[str]:
    """ImageMagick coder name from a file's first bytes, or None when it is not an accepted raster format."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "pnm"
    return None


_limits_set = False


def _wand():
    """Import Wand (needs libMagickWand) and apply resource limits once per process."""
    global _limits_set
    try:
        import wand.image  # noqa: F401
        import wand.resource
    except ImportError as e:  # the message of Wand's own error is long; keep ours to one line
        raise ImportError(
            "Wand cannot find ImageMagick's library: install it (Debian: "
            "apt-get install -y --no-install-recommends libmagickwand-6.q16-6) or run `make` targets, "
            "which do") from e
    if not _limits_set:
        for name, value in _LIMITS.items():
            try:
                wand.resource.limits[name] = value
            except (KeyError, ValueError, TypeError):  # older ImageMagick lacks some resources
                pass
        _limits_set = True
    return wand


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageReadError(f"cannot open: {e.strerror}") from e
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    return data


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE):
    """Decode image bytes into a ``wand.image.Image`` in 8-bit sRGB, first frame, upright, no alpha.

    Raises ImageReadError with a one-line reason for anything that is not an accepted, sane raster.
    The caller owns (and must close) the returned image.
    """
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ImageReadError("not a supported raster image (magic bytes: PNG, JPEG, TIFF, BMP, WebP, PNM, GIF)")
    if fmt == "jpeg" and not _jpeg_complete(data):
        raise ImageReadError("truncated jpeg: no end-of-image marker after the scan data")
    wand = _wand()
    from wand.exceptions import WandException
    from wand.image import Image
    try:
        with Image.ping(blob=data, format=fmt) as hdr:
            w, h = hdr.width, hdr.height
    except WandException as e:
        raise ImageReadError(f"unreadable {fmt} header: {_first_line(e)}") from e
    if w * h > max_pixels:
        raise ImageReadError(f"header claims {w}x{h} ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit")
    if min(w, h) < min_side:
        raise ImageReadError(f"too small: {w}x{h} (under {min_side} px)")
    try:
        img = Image(blob=data, format=fmt)
    except WandException as e:
        raise ImageReadError(f"corrupt {fmt}: {_first_line(e)}") from e
    try:
        if len(img.sequence) > 1:  # GIF / multi-page TIFF: the first frame only
            first = Image(image=img.sequence[0])
            img.close()
            img = first
        img.auto_orient()  # EXIF orientation
        if img.colorspace not in ("srgb", "rgb"):
            img.transform_colorspace("srgb")  # CMYK, grey, Lab, ... -> sRGB
        if img.alpha_channel:
            img.background_color = wand.color.Color("white")
            img.alpha_channel = "remove"  # composite over white
        img.type = "truecolor"
        img.depth = 8
        if img.width * img.height == 0:
            raise ImageReadError("decoded to an empty image")
    except WandException as e:
        img.close()
        raise ImageReadError(f"corrupt {fmt}: {_first_line(e)}") from e
    except BaseException:
        img.close()
        raise
    return img


def to_array(img) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB pixels of a decoded Wand image."""
    blob = img.make_blob("rgb")
    return np.frombuffer(blob, np.uint8).reshape(img.height, img.width, 3).copy()


def resize_array(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``[height, width, 3]`` with ImageMagick's Lanczos filter (the paper's path)."""
    _wand()
    from wand.image import Image
    with Image(blob=np.ascontiguousarray(arr).tobytes(), format="rgb", width=arr.shape[1],
               height=arr.shape[0], depth=8) as img:
        img.resize(width, height, filter="lanczos")
        return to_array(img)


def load_rgb(path: str | os.PathLike, size: Optional[int] = None, mode: str = "resize") -> np.ndarray:
    """Read any accepted image file into ``uint8 [H, W, 3]`` sRGB; never modifies the file.

    size: None keeps the image's own size; otherwise the output is ``[size, size, 3]``.
    mode: "resize" squashes the whole image to size x size (the paper's preparation);
          "center_crop" takes the largest centred square first, keeping the aspect ratio.
    Raises ImageReadError (one-line reason) for anything unreadable.
    """
    if mode not in ("resize", "center_crop"):
        raise ValueError(f"unknown resize mode {mode!r}: use 'resize' or 'center_crop'")
    wand = _wand()
    img = decode(read_bytes(path))
    try:
        if size is not None:
            if mode == "center_crop":
                side = min(img.width, img.height)
                img.crop(width=side, height=side, gravity="center")
            img.resize(size, size, filter="lanczos")
        return to_array(img)
    except wand.exceptions.WandException as e:
        raise ImageReadError(f"cannot resize: {_first_line(e)}") from e
    finally:
        img.close()


def _jpeg_complete(data: bytes) -> bool:
    """True when a JPEG has an end-of-image marker after its first scan.

    libjpeg fills a truncated JPEG with grey and ImageMagick reports no error, so we check the structure:
    walk the marker segments (skipping EXIF thumbnails, which hold their own end marker) up to the first
    start-of-scan, then look for the end-of-image marker after it.
    """
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return data.find(b"\xff\xd9", i + 2) != -1
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
