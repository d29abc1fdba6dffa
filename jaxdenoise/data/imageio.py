"""Safe image reading through Wand (ImageMagick): every image enters jaxdenoise here.

Guards, in the order they run, so that no file can make ImageMagick do anything but decode a raster:
1. Magic bytes: only PNG, JPEG, TIFF, BMP, WebP, PNM (PBM/PGM/PPM) and GIF are accepted, and the coder is
   forced to the one the bytes name (no PS/PDF/SVG/MSL/text coders, no guessing from the file name).
2. Resource limits (memory, map, disk, width, height) are set once per process, so no file can make
   ImageMagick allocate gigabytes.
3. The size the header claims (read by ``header_size``, then by ImageMagick's ``ping``): images under
   ``MIN_SIDE`` px, over ``MAX_PIXELS`` or over ImageMagick's width/height limit are rejected before any
   pixel is decoded.
4. Decode, first frame only (GIF, multi-page TIFF), EXIF orientation applied, CMYK/grey/palette converted to
   sRGB, alpha composited over white, any bit depth reduced to 8 bits.

Wand needs ImageMagick's shared library, so ``wand`` is imported lazily: modules that only read prepared
stores (the GPU machines have no ImageMagick) never touch it.
"""
from __future__ import annotations

import os
import struct
from typing import Optional, Tuple

import numpy as np

from jaxdenoise.fsutil import first_line

MAX_PIXELS = 40_000_000  # header claims above this are rejected before decoding
MIN_SIDE = 8
MAX_SIZE = 4096  # the largest side a store, a resize or a training crop may ask for (larger is a typo)
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
_max_side = _LIMITS["width"]  # lowered to ImageMagick's own policy (Debian: 16000 px) once it is loaded


def _wand():
    """Import Wand (needs libMagickWand) and apply resource limits once per process."""
    global _limits_set, _max_side
    if os.environ.get("JAXDENOISE_NO_IMAGEMAGICK"):  # tests: behave as on a machine without the library
        raise ImportError("Wand cannot find ImageMagick's library (JAXDENOISE_NO_IMAGEMAGICK is set)")
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
        try:  # policy.xml can only lower a limit: the effective one is what ImageMagick reports
            _max_side = int(min(wand.resource.limits["width"], wand.resource.limits["height"]))
        except (KeyError, ValueError, TypeError):
            pass
        _limits_set = True
    return wand


def has_imagemagick() -> bool:
    """True when Wand can load ImageMagick's library here (the CPU machines; not the GPU image)."""
    try:
        _wand()
    except ImportError:
        return False
    return True


def is_grey(image: np.ndarray) -> bool:
    """Whether ``uint8 [H, W, 3]`` holds a greyscale picture (every pixel's three channels equal): what a grey
    file becomes when read as RGB."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def pair_mismatch(clean: np.ndarray, noisy: np.ndarray) -> Optional[str]:
    """Why a clean image and its noisy shot cannot be a pair (sizes, or grey against colour), or None."""
    if clean.shape != noisy.shape:
        return (f"the noisy shot is {noisy.shape[1]}x{noisy.shape[0]}, the clean reference "
                f"{clean.shape[1]}x{clean.shape[0]}: a pair must be aligned")
    grey_c, grey_n = is_grey(clean), is_grey(noisy)
    if grey_c != grey_n:
        return (f"the {'noisy shot' if grey_n else 'clean reference'} is greyscale, the "
                f"{'clean reference' if grey_n else 'noisy shot'} colour: a pair must be the same kind of picture")
    return None


def read_bytes(path: str | os.PathLike) -> bytes:
    from jaxdenoise import fsutil
    try:
        data = fsutil.read_regular(path)  # a FIFO or device in a folder is skipped, never waited on
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
    claimed = header_size(data, fmt)
    if claimed is not None:  # before ping: ImageMagick's refusal of a huge header says nothing about size
        _check_size(*claimed, max_pixels=max_pixels, min_side=0)  # small: ping's call (JPEG DNL, GIF frames)
    try:
        with Image.ping(blob=data, format=fmt) as hdr:
            w, h = hdr.width, hdr.height
    except WandException as e:
        raise ImageReadError(f"unreadable {fmt} header: {_reason(e)}") from e
    _check_size(w, h, max_pixels=max_pixels, min_side=min_side)
    try:
        img = Image(blob=data, format=fmt)
    except WandException as e:
        raise ImageReadError(f"corrupt {fmt}: {_reason(e)}") from e
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
        raise ImageReadError(f"corrupt {fmt}: {_reason(e)}") from e
    except BaseException:
        img.close()
        raise
    return img


def to_array(img) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB pixels of a decoded Wand image.

    Raises ImageReadError when ImageMagick has no pixels to give: a damaged animated WebP frame decodes to an
    image with a size but no pixel data, and the blob then comes back empty (None from Wand).
    """
    blob = img.make_blob("rgb")
    if not blob or len(blob) != img.width * img.height * 3:
        raise ImageReadError(f"corrupt {img.format.lower()}: ImageMagick decoded a {img.width}x{img.height} "
                             f"image without pixel data")
    return np.frombuffer(blob, np.uint8).reshape(img.height, img.width, 3).copy()


def resize_array(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``[height, width, 3]`` with ImageMagick's Lanczos filter (the paper's path)."""
    _wand()
    from wand.image import Image
    with Image(blob=np.ascontiguousarray(arr).tobytes(), format="rgb", width=arr.shape[1],
               height=arr.shape[0], depth=8) as img:
        img.resize(width, height, filter="lanczos")
        return to_array(img)


RESIZE_MODES = ("resize", "center_crop", "full")  # load_rgb's modes (config's data.resize_mode)


def load_rgb(path: str | os.PathLike, size: Optional[int] = None, mode: str = "resize") -> np.ndarray:
    """Read any accepted image file into ``uint8 [H, W, 3]`` sRGB; never modifies the file.

    size: None keeps the image's own size; otherwise the output is ``[size, size, 3]``.
    mode: "resize" squashes the whole image to size x size (the paper's preparation);
          "center_crop" takes the largest centred square first, keeping the aspect ratio;
          "full" keeps the aspect ratio and shrinks only images whose longer side exceeds ``size``.
    Raises ImageReadError (one-line reason) for anything unreadable.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}: use {', '.join(map(repr, RESIZE_MODES))}")
    wand = _wand()
    img = decode(read_bytes(path))
    try:
        if mode == "full":
            if size is not None and max(img.width, img.height) > size:
                scale = size / max(img.width, img.height)
                img.resize(max(1, round(img.width * scale)), max(1, round(img.height * scale)), filter="lanczos")
        elif size is not None:
            if mode == "center_crop":
                side = min(img.width, img.height)
                img.crop(width=side, height=side, gravity="center")
            img.resize(size, size, filter="lanczos")
        return to_array(img)
    except wand.exceptions.WandException as e:
        raise ImageReadError(f"cannot resize: {_reason(e)}") from e
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


def _check_size(w: int, h: int, *, max_pixels: int, min_side: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(f"too large: {w}x{h} ({w * h / 1e6:.0f} MP), "
                             f"over the {max_pixels / 1e6:.0f} MP limit")
    if max(w, h) > _max_side:
        raise ImageReadError(f"too large: {w}x{h}, over ImageMagick's {_max_side} px limit on a side")
    if min(w, h) < min_side:
        raise ImageReadError(f"too small: {w}x{h} (under {min_side} px)")


# Wand's text when ImageMagick failed without saying why; it blames a missing delegate, which misleads
_NO_REASON = "returns false, but did"


def _reason(e: BaseException) -> str:
    """One line from a Wand error, without Wand's misleading 'a delegate is missing' boilerplate."""
    text = first_line(e, limit=200)
    return "ImageMagick could not decode it (no reason given)" if _NO_REASON in text else text


def header_size(data: bytes, fmt: str) -> Optional[Tuple[int, int]]:
    """(width, height) that the header of ``fmt`` bytes claims, or None when it cannot be found cheaply.

    Only a first guard against absurd sizes: ImageMagick's ping still has the last word.
    """
    try:
        if fmt == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if fmt == "gif":
            return _gif_size(data)
        if fmt == "bmp":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 core header: 16-bit sides
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)  # negative height: rows stored top-down
        if fmt == "webp":
            return _webp_size(data)
        if fmt == "jpeg":
            return _jpeg_size(data)
        if fmt == "tiff":
            return _tiff_size(data)
    except (struct.error, IndexError):  # header shorter than it should be: ping will say so
        return None
    return None


def _gif_size(data: bytes) -> Optional[Tuple[int, int]]:
    """Sides of the first frame (its image descriptor; the logical screen can be larger, or 0x0)."""
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    while i < len(data) and data[i] == 0x21:  # extension: label, then sub-blocks up to an empty one
        i += 2
        while i < len(data) and data[i]:
            i += 1 + data[i]
        i += 1
    if data[i:i + 1] != b"\x2c":
        return None
    return struct.unpack("<HH", data[i + 5:i + 9])


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit canvas width-1, height-1
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L" and data[20:21] == b"\x2f":  # 14-bit width-1, height-1 packed after the signature
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # 14-bit width, height after the start code
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """Sides from the first start-of-frame segment (SOF0..SOF15, not DHT/JPG/DAC)."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker == 0xDA:  # scan data before any frame header
            return None
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _tiff_size(data: bytes) -> Optional[Tuple[int, int]]:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    sides = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
        tag, typ = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # SHORT (type 3) or LONG
            sides[tag] = struct.unpack(order + "H", entry[8:10])[0] if typ == 3 else \
                struct.unpack(order + "I", entry[8:12])[0]
    return (sides[256], sides[257]) if len(sides) == 2 else None
