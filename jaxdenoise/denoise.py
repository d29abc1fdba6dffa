"""Denoise images of any size with a trained model: whole-image inference, or overlapping tiles.

Sizes are reflect-padded to the model's stride and cropped back. An image larger than the tile is cut into
tiles on a grid of multiples of the stride (so pooling grids line up across tiles), run in fixed-size
batches (one compilation per tile shape), and blended with a separable weight window that ramps from ~0 to 1
across the overlap, so seams do not show. Memory stays bounded by the image itself plus two float32
accumulators and one batch of tiles.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdenoise import models

Apply = Callable[[jax.Array], jax.Array]


def make_apply(model, params) -> Apply:
    """A jitted ``float32 [B, H, W, 3] -> [B, H, W, 3]`` denoiser (recompiles once per input shape)."""
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return lambda x: fn(params, x)


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad ``[H, W, C]`` at the bottom/right to ``[h, w, C]`` (symmetric when the image is too small)."""
    ph, pw = h - x.shape[0], w - x.shape[1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[0] and pw < x.shape[1] else "symmetric"
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode=mode)


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights: a raised-cosine ramp over ``overlap`` px at inner edges, 1 elsewhere."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
        if not at_start:
            w[:overlap] = r
        if not at_end:
            w[n - overlap:] = r[::-1]
    return w


def _starts(size: int, tile: int, step: int, stride: int) -> List[int]:
    """Tile origins covering [0, size): a regular grid, the last tile flush with the end, all multiples of stride."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    last = size - tile
    if starts[-1] != last:
        starts.append(last)
    assert all(s % stride == 0 for s in starts), "tile origins must be multiples of the stride"
    return starts


def denoise(apply: Apply, image: np.ndarray, stride: int = 4, tile: int = 256, overlap: int = 32,
            batch: int = 8, bucket: int = 0) -> np.ndarray:
    """Denoise ``float32 [H, W, 3]`` in [0, 1] -> ``float32 [H, W, 3]``; tiles when larger than ``tile``.

    tile and overlap are rounded to multiples of ``stride``; tile <= 0 means whole-image inference always.
    bucket: pad whole-image inputs to multiples of this (a multiple of stride) instead of the stride, so
    that a folder of mixed sizes compiles a few shapes, not one per size.
    """
    h, w = image.shape[:2]
    if tile <= 0 or (_ceil_to(h, stride) <= tile and _ceil_to(w, stride) <= tile):
        m = _ceil_to(max(bucket, stride), stride)
        x = _pad_to(np.asarray(image, np.float32), _ceil_to(h, m), _ceil_to(w, m))
        return np.asarray(apply(x[None]))[0, :h, :w]
    hp, wp = _ceil_to(h, stride), _ceil_to(w, stride)
    x = _pad_to(np.asarray(image, np.float32), hp, wp)
    tile = max(_ceil_to(tile, stride), 2 * stride)
    overlap = min(_ceil_to(overlap, stride), tile // 2)
    th, tw = min(tile, hp), min(tile, wp)
    ys = _starts(hp, th, th - overlap, stride)
    xs = _starts(wp, tw, tw - overlap, stride)
    acc = np.zeros((hp, wp, 3), np.float32)
    wsum = np.zeros((hp, wp, 1), np.float32)
    coords = [(y, x0) for y in ys for x0 in xs]
    for i in range(0, len(coords), batch):
        chunk = coords[i:i + batch]
        tiles = np.stack([x[y:y + th, x0:x0 + tw] for y, x0 in chunk])
        if len(chunk) < batch:  # fixed batch shape: one compilation per tile shape
            tiles = np.concatenate([tiles, np.repeat(tiles[-1:], batch - len(chunk), 0)])
        out = np.asarray(apply(tiles))
        for (y, x0), o in zip(chunk, out):
            wy = _ramp(th, overlap, y == 0, y + th >= hp)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= wp)
            wgt = (wy[:, None] * wx[None, :])[..., None]
            acc[y:y + th, x0:x0 + tw] += o * wgt
            wsum[y:y + th, x0:x0 + tw] += wgt
    return (acc / wsum)[:h, :w]


def _ceil_to(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def model_stride(model) -> int:
    return int(getattr(model, "stride", 1))


def load_denoiser(workdir: str, which: str | int = "best") -> Tuple[Apply, int, Dict]:
    """(apply, stride, info) for a run's checkpoint; info has the config and step."""
    from jaxdenoise import checkpointing
    config, params, step = checkpointing.load_params(workdir, which)
    model = models.create(config.model, config.dtype)
    return make_apply(model, params), model_stride(model), {"config": config, "step": step}


def denoise_paths(workdir: str, input_path: str, output_dir: str, which: str | int = "best", tile: int = 256,
                  overlap: int = 32, batch: int = 8, keep_format: bool = False, progress: bool = True) -> Dict:
    """Denoise a file or every image in a folder into ``output_dir`` (same relative names; PNG unless
    ``keep_format``). Unreadable files are skipped and listed; inputs are never overwritten.

    Returns ``{"written": [paths], "skipped": [{path, reason}]}``.
    """
    import os
    import sys

    from tqdm import tqdm

    from jaxdenoise.data import imageio, prepare
    if os.path.isfile(input_path):
        root, files = os.path.dirname(os.path.abspath(input_path)), [os.path.basename(input_path)]
    elif os.path.isdir(input_path):
        root, files = os.path.abspath(input_path), prepare.list_files(input_path)
    else:
        raise ValueError(f"--input {input_path} does not exist")
    apply, stride, _ = load_denoiser(workdir, which)
    out_root = os.path.abspath(output_dir)
    written, skipped = [], []
    for rel in tqdm(files, desc="denoising", unit="img", disable=not progress or len(files) < 2, file=sys.stderr):
        src = os.path.join(root, rel)
        stem, ext = os.path.splitext(rel)
        dst = os.path.join(out_root, (rel if keep_format else stem + ".png"))
        if os.path.abspath(dst) == os.path.abspath(src):
            skipped.append({"path": rel, "reason": "output would overwrite the input: choose another --output"})
            continue
        try:
            image = imageio.load_rgb(src)
        except imageio.ImageReadError as e:
            skipped.append({"path": rel, "reason": str(e)})
            print(f"skipped {rel}: {e}", file=sys.stderr)
            continue
        out = denoise(apply, image.astype(np.float32) / 255.0, stride, tile, overlap, batch)
        _write(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), dst, keep_format)
        written.append(dst)
    return {"written": written, "skipped": skipped}


def _write(image: np.ndarray, path: str, keep_format: bool) -> None:
    import os
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if keep_format:  # the input's format, through ImageMagick (chosen from the extension)
        from wand.image import Image
        with Image(blob=image.tobytes(), format="rgb", width=image.shape[1], height=image.shape[0], depth=8) as img:
            img.save(filename=path)
    else:
        from PIL import Image
        Image.fromarray(image).save(path)
