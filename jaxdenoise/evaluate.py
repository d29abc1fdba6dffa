"""Evaluate a trained run from its workdir alone: checkpoint -> metrics at one or more noise specs."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import jax
import numpy as np

from jaxdenoise import fsutil, metrics as metrics_lib, noise as noise_lib
from jaxdenoise.data import store


BUCKET = 64  # whole-image inputs and metrics are padded to multiples of this: a few shapes per folder


def load_folder(path: str, resize: int | None = None) -> Tuple[List[Tuple[str, np.ndarray]], List[Dict]]:
    """Every image under ``path`` (a file or folder), ``uint8 [H, W, 3]`` at its own size (or resized square),
    read through the project's Wand path; unreadable files are returned in ``skipped`` with their reason."""
    from jaxdenoise.data import imageio, prepare
    if os.path.isfile(path):
        files = [os.path.basename(path)]
        path = os.path.dirname(path) or "."
    elif os.path.isdir(path):
        files = prepare.list_files(path)
    else:
        raise ValueError(f"--data {path} does not exist")
    images, skipped = [], []
    for rel in files:
        try:
            images.append((rel, imageio.load_rgb(os.path.join(path, rel), resize)))
        except imageio.ImageReadError as e:
            skipped.append({"path": rel, "reason": str(e)})
    if not images:
        raise ValueError(f"no readable images under {path}")
    return images, skipped


class _Scorer:
    """Masked PSNR / SSIM of images of mixed sizes, padded to ``BUCKET`` multiples and batched (vmap in jit)."""

    def __init__(self, batch: int = 8):
        self.batch = batch
        self.fn = jax.jit(lambda a, b, hw: (metrics_lib.psnr_from_mse(metrics_lib.masked_mse_per_image(a, b, hw)),
                                            metrics_lib.masked_ssim_per_image(a, b, hw)))

    def __call__(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
        """pairs of (clean, other) ``float [H, W, 3]`` -> (psnr [N], ssim [N])."""
        psnr, ssim = np.zeros(len(pairs)), np.zeros(len(pairs))
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, (c, _) in enumerate(pairs):
            groups.setdefault(_bucket_shape(c.shape), []).append(i)
        for (hb, wb), idx in groups.items():
            for s in range(0, len(idx), self.batch):
                chunk = idx[s:s + self.batch]
                full = chunk + [chunk[-1]] * (self.batch - len(chunk))  # fixed batch: no recompiles
                a = np.stack([_pad(pairs[i][0], hb, wb) for i in full])
                b = np.stack([_pad(pairs[i][1], hb, wb) for i in full])
                hw = np.array([pairs[i][0].shape[:2] for i in full], np.int32)
                p, q = jax.device_get(self.fn(a, b, hw))
                psnr[chunk], ssim[chunk] = p[:len(chunk)], q[:len(chunk)]
        return psnr, ssim


def _bucket_shape(shape) -> Tuple[int, int]:
    return (-(-shape[0] // BUCKET) * BUCKET, -(-shape[1] // BUCKET) * BUCKET)


def _pad(x: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)))


def run(workdir: str, which: str | int = "best", data: str | None = None, noise_specs: Sequence[str] = (),
        baselines: Sequence[str] = (), resize: int | None = None, seed: int | None = None, tile: int = 512,
        overlap: int = 32, batch: int = 8, grid_path: str | None = None, grid_count: int = 3,
        limit: int | None = None) -> List[Dict]:
    """The evaluation table: per noise spec, rows for the noisy input, the model and each baseline.

    Rows: ``{noise, method, psnr, ssim, sec_per_mp, images}`` (means over images; sec_per_mp excludes
    compilation). Data: ``data`` (a file or folder, images at their own size unless ``resize``) or the run's
    validation split; ``limit`` keeps the first N images. Noise for image i is drawn from
    ``fold_in(PRNGKey(seed), i)``: same command, same numbers.
    """
    from jaxdenoise import baselines as baselines_lib, denoise as denoise_lib, plots, train

    apply, stride, info = denoise_lib.load_denoiser(workdir, which)
    config = info["config"]
    if data:
        named, skipped = load_folder(data, resize)
        for s in skipped:
            print(f"skipped {s['path']}: {s['reason']}")
    else:
        split = store.open_split(train.resolve_store(config, workdir), "val")
        named = [(f"val/{i:06d}", np.asarray(split[i])) for i in range(split.shape[0])]
    named = named[:limit] if limit else named
    seed = config.eval_seed if seed is None else seed
    model_name = f"{config.model.name} (step {info['step']})"
    for b in baselines:
        if b not in baselines_lib.AVAILABLE:
            raise ValueError(f"unknown baseline {b!r}: choose from {', '.join(baselines_lib.AVAILABLE)}")
    scorer = _Scorer()
    key = jax.random.PRNGKey(seed)
    rows, grid_cols = [], []
    for spec in noise_specs or [config.eval_noise or config.noise]:
        model_noise = noise_lib.parse(spec)
        add_noise = jax.jit(lambda k, x: model_noise(k, x[None])[0])
        clean = [img.astype(np.float32) / 255.0 for _, img in named]
        first_of_each_shape = sorted({_bucket_shape(c.shape): i for i, c in reversed(list(enumerate(clean)))}.values())
        noisy = []
        for i, c in enumerate(clean):  # noise on the bucket-padded image: a few shapes, a few compilations
            hb, wb = _bucket_shape(c.shape)
            noisy.append(np.asarray(add_noise(jax.random.fold_in(key, i), _pad(c, hb, wb)))[:c.shape[0], :c.shape[1]])
        outputs = {"noisy input": (noisy, 0.0)}
        fns = {model_name: lambda y: denoise_lib.denoise(apply, y, stride, tile, overlap, batch, bucket=BUCKET)}
        fns.update({b: baselines_lib.make(b, model_noise) for b in baselines})
        for name, fn in fns.items():
            # warm-up: the model compiles once per bucket shape, and that stays out of the timing
            for i in (first_of_each_shape if name == model_name else first_of_each_shape[:1]):
                fn(noisy[i])
            t0 = time.perf_counter()
            outs = [fn(y) for y in noisy]
            dt = time.perf_counter() - t0
            outputs[name] = (outs, dt / (sum(c.shape[0] * c.shape[1] for c in clean) / 1e6))
        for name, (outs, spmp) in outputs.items():
            psnr, ssim = scorer(list(zip(clean, outs)))
            rows.append({"noise": spec, "method": name, "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
                         "sec_per_mp": spmp, "images": len(clean)})
        if grid_path and not grid_cols:
            grid_cols = _grid_columns(clean, outputs, grid_count)
    if grid_path and grid_cols:
        try:  # the numbers matter more than the figure: a grid that cannot be written is a warning
            plots.save_png(plots.image_grid(grid_cols), grid_path)
        except OSError as e:
            print(f"warning: comparison grid not written: {fsutil.describe(e, grid_path)}", file=sys.stderr)
    return rows


def _grid_columns(clean, outputs, count) -> List[np.ndarray]:
    """clean | noisy | model | baselines, centre crops of the first ``count`` images at a common size."""
    count = min(count, len(clean))
    side = min(min(c.shape[:2]) for c in clean[:count])
    side = min(side, 256)

    def crop(x):
        y0, x0 = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
        return x[y0:y0 + side, x0:x0 + side]
    cols = [np.stack([crop(c) for c in clean[:count]])]
    cols += [np.stack([crop(o) for o in outs[:count]]) for outs, _ in outputs.values()]
    return cols


def write_json(rows: Sequence[Dict], path: str) -> None:
    keep = ("noise", "method", "psnr", "ssim", "sec_per_mp", "images")
    fsutil.atomic_write(path, json.dumps([{k: r[k] for k in keep if k in r} for r in rows], indent=1) + "\n")


def format_table(rows: Sequence[Dict]) -> str:
    """A fixed-width table of evaluation rows, with the metric convention underneath."""
    cols = [("noise", "{}"), ("method", "{}"), ("psnr", "{:.2f}"), ("ssim", "{:.4f}"), ("images", "{}")]
    extra = [("sec_per_mp", "{:.3f}")] if any("sec_per_mp" in r for r in rows) else []
    cols += extra
    cells = [[c for c, _ in cols]] + [[fmt.format(r[c]) if c in r else "" for c, fmt in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n(PSNR dB / SSIM: {metrics_lib.CONVENTION})"
