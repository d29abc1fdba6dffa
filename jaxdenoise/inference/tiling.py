"""Tiling under ``Denoiser``: whole-image inference, or overlapping tiles, of an ``apply`` function
(``float32 [B, H, W, C] -> [B, H, W, 3]``) on images of any size.

Sizes are reflect-padded to the model's stride and cropped back. An image larger than the tile is cut into
tiles on a grid of multiples of the stride (so pooling grids line up across tiles), run in fixed-size
batches (one compilation per tile shape), and blended with a separable weight window that ramps from ~0 to 1
across the overlap, so seams do not show. Memory stays bounded by the image itself plus two float32
accumulators and one batch of tiles.
"""
from __future__ import annotations

import math
from typing import Callable, List, Tuple

import numpy as np

Apply = Callable[[np.ndarray], np.ndarray]


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad ``[H, W, C]`` at the bottom/right to ``[h, w, C]`` (symmetric when the image is too small)."""
    ph, pw = h - x.shape[0], w - x.shape[1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[0] and pw < x.shape[1] else "symmetric"
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode=mode)


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool, margin: int = 0) -> np.ndarray:
    """1-D blending weights over a tile of ``n`` px: at inner edges, 0 over the ``margin`` px next to the edge
    (too close to it to see the context the model needs), then a raised-cosine ramp up over the rest of the
    ``overlap`` minus the neighbour's margin (a step in its middle when nothing is left), 1 elsewhere."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        band = overlap - 2 * margin
        p = np.arange(overlap, dtype=np.float32)
        if band > 0:
            r = np.clip((p - margin + 0.5) / band, 0.0, 1.0)
            r = 0.5 - 0.5 * np.cos(np.pi * r)
        else:
            r = (p >= overlap / 2).astype(np.float32)
        if not at_start:
            w[:overlap] = r
        if not at_end:
            w[n - overlap:] = r[::-1]
    return w


def _even_tiles(size: int, tile: int, overlap: int, stride: int) -> Tuple[int, List[int]]:
    """(tile side, origins) covering [0, size) with the fewest tiles of at most ``tile`` px (``size`` itself
    when that is smaller), evenly spread, neighbours overlapping by at least ``overlap``, origins multiples of
    ``stride``. A fixed side would waste work: 1024-px tiles of a 2048-px side overlap by 32 px only with a
    third tile per axis (2.25x the pixels, 2.6x the time measured); three of 704 px recompute 6 %."""
    if size <= tile:
        return size, [0]
    if size % stride or tile % stride or tile <= overlap:
        raise ValueError(f"tiling: side {size} and tile {tile} must be multiples of the stride {stride}, and the tile "
                         f"larger than the overlap {overlap}")
    n = -(-(size - overlap) // (tile - overlap))
    while True:
        side = min(tile, ceil_to(-(-(size + (n - 1) * overlap) // n), stride) + stride)
        starts = sorted({min(size - side, (round(i * (size - side) / (n - 1)) // stride) * stride) for i in range(n)})
        if all(b - a <= side - overlap for a, b in zip(starts, starts[1:])) and starts[-1] + side == size:
            break
        n += 1  # rounding to the stride left a gap narrower than the overlap: one tile more
    assert all(s % stride == 0 for s in starts), "tile origins must be multiples of the stride"
    return side, starts


def denoise(apply: Apply, image: np.ndarray, stride: int, tile: int = 256, overlap: int = 32,
            batch: int = 8, bucket: int = 0, margin: int = 0) -> np.ndarray:
    """Denoise ``float32 [H, W, C]`` in [0, 1] -> ``float32 [H, W, 3]``; tiles when larger than ``tile``.

    C is the model's ``in_channels``: 3, or 4 for a non-blind model (``with_level`` appends the map; it is
    padded and tiled with the image).

    tile and overlap are rounded to multiples of ``stride``; tile <= 0 means whole-image inference always.
    bucket: pad inputs to multiples of this (a multiple of stride) instead of the stride, so that a folder
    of mixed sizes compiles a few shapes, not one per size; tiles cut the same padded image, so that they
    see the borders the whole image does.
    margin: the context (px) an output pixel needs on each side (half the receptive field): no weight is
    given to a tile's pixels that close to its inner edges, so that with ``overlap`` >= 2 ``margin`` the
    tiles give the whole image's output (``min_overlap``; tested on a randomised U-Net).
    """
    h, w = image.shape[:2]
    m = ceil_to(max(bucket, stride), stride)
    if tile <= 0 or (ceil_to(h, m) <= tile and ceil_to(w, m) <= tile):
        x = _pad_to(np.asarray(image, np.float32), ceil_to(h, m), ceil_to(w, m))
        return np.asarray(apply(x[None]))[0, :h, :w]
    hp, wp = ceil_to(h, m), ceil_to(w, m)
    x = _pad_to(np.asarray(image, np.float32), hp, wp)
    tile = max(ceil_to(tile, stride), 2 * stride)
    overlap = ceil_to(overlap, stride)
    if 2 * overlap > tile:  # a capped overlap would blend borders that never saw their context
        raise ValueError(f"tile {tile} px cannot hold an overlap of {overlap} px on both sides: use a tile of at "
                         f"least {2 * overlap} px (or 0 for whole images)")
    th, ys = _even_tiles(hp, tile, overlap, stride)
    tw, xs = _even_tiles(wp, tile, overlap, stride)
    acc = np.zeros((hp, wp, 3), np.float32)
    wsum = np.zeros((hp, wp, 1), np.float32)
    coords = [(y, x0) for y in ys for x0 in xs]
    # no more rows per call than there are tiles: padding 2 tiles to a batch of 8 cost 4x (measured,
    # benchmark.py --inference: 512 px tiles on a 768x512 image 5.1x the whole image's time per pixel, 256 px 3.0x)
    batch = max(1, min(batch, len(coords)))
    batch = -(-len(coords) // -(-len(coords) // batch))  # as many calls, the last one padded the least
    for i in range(0, len(coords), batch):
        chunk = coords[i:i + batch]
        tiles = np.stack([x[y:y + th, x0:x0 + tw] for y, x0 in chunk])
        if len(chunk) < batch:  # fixed batch shape: one compilation per tile shape
            tiles = np.concatenate([tiles, np.repeat(tiles[-1:], batch - len(chunk), 0)])
        out = np.asarray(apply(tiles))
        for (y, x0), o in zip(chunk, out):
            wy = _ramp(th, overlap, y == 0, y + th >= hp, margin)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= wp, margin)
            wgt = (wy[:, None] * wx[None, :])[..., None]
            acc[y:y + th, x0:x0 + tw] += o * wgt
            wsum[y:y + th, x0:x0 + tw] += wgt
    acc /= wsum  # in place: a 24 MP photo's float copies are ~300 MB each
    return acc[:h, :w]


def ceil_to(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return int(math.ceil(n / m) * m)


def min_overlap(overlap: int, receptive_field: int) -> int:
    """Tile overlap: at least the model's receptive field, so that every weighted pixel of a tile sees all
    the context it needs (``denoise``'s ``margin``, half the field, on each side) and tiles equal the whole
    image."""
    return max(overlap, 2 * context(receptive_field))


def context(receptive_field: int) -> int:
    """Pixels of context an output pixel needs on each side: half the receptive field."""
    return -(-receptive_field // 2)


def check_tiling(tile: int, overlap: int, stride: int, receptive_field: int, what: str = "the model") -> None:
    """One-line ValueError unless ``tile`` (0: whole images) can hold the overlap ``denoise`` will use
    (``min_overlap``, rounded to the stride) on both sides; a smaller tile would give seams and wrong borders."""
    if tile < 0 or overlap < 0:
        raise ValueError(f"--tile and --overlap must be >= 0, got {tile} and {overlap}")
    if tile == 0:
        return
    ov = ceil_to(min_overlap(overlap, receptive_field), stride)
    need = max(2 * ov, 2 * stride)
    if max(ceil_to(tile, stride), 2 * stride) < need:
        raise ValueError(f"--tile {tile} is too small for {what} (receptive field {receptive_field} px, overlap "
                         f"{ov} px between neighbours, on both sides of a tile): use --tile {need} or more, or --tile 0 for whole images")
