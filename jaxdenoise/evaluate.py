"""Evaluate a trained run from its workdir alone: checkpoint -> metrics at one or more noise specs."""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import jax
import numpy as np

from jaxdenoise import fsutil, metrics as metrics_lib, noise as noise_lib, parallel
from jaxdenoise.data import store
from jaxdenoise.inference import denoiser, load, tiling


BUCKET = denoiser.BUCKET  # metrics are padded as the Denoiser pads whole images: a few shapes per folder


def load_folder(path: str, resize: int | None = None,
                flag: str = "--data") -> Tuple[List[Tuple[str, np.ndarray]], List[Dict]]:
    """Every image under ``path`` (a file or folder), ``uint8 [H, W, 3]`` at its own size (or resized square),
    read through the project's Wand path; unreadable files are returned in ``skipped`` with their reason.
    ``flag`` names the path in errors."""
    from jaxdenoise.data import imageio, prepare
    given = path
    if os.path.isfile(path):
        files = [os.path.basename(path)]
        path = os.path.dirname(path) or "."
    elif os.path.isdir(path):
        files = prepare.list_files(path)
    else:
        raise ValueError(f"{flag} {path} does not exist")
    images, skipped = [], []
    for rel in files:
        try:
            images.append((rel, imageio.load_rgb(os.path.join(path, rel), resize)))
        except imageio.ImageReadError as e:
            skipped.append({"path": rel, "reason": str(e)})
    if not images:
        why = f" ({skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise ValueError(f"{flag} {given}: no readable images{why}")
    return images, skipped


class _Scorer:
    """Masked PSNR / SSIM of images of mixed sizes, padded to ``BUCKET`` multiples and batched (vmap in jit)."""

    def __init__(self, batch: int = 8):
        self.batch = batch
        self.fn = jax.jit(lambda a, b, hw, win: (
            metrics_lib.psnr_from_mse(metrics_lib.masked_mse_per_image(a, b, hw)),
            metrics_lib.masked_ssim_per_image(a, b, hw, win)), static_argnums=3)

    def __call__(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
        """pairs of (clean, other) ``float [H, W, 3]`` -> (psnr [N], ssim [N])."""
        psnr, ssim = np.zeros(len(pairs)), np.zeros(len(pairs))
        groups: Dict[Tuple[int, int, int], List[int]] = {}
        for i, (c, _) in enumerate(pairs):  # by bucket shape and SSIM window (smaller for images under 11 px)
            groups.setdefault((*_bucket_shape(c.shape), metrics_lib.window(*c.shape[:2])), []).append(i)
        for (hb, wb, win), idx in groups.items():
            for s in range(0, len(idx), self.batch):
                chunk = idx[s:s + self.batch]
                full = chunk + [chunk[-1]] * (self.batch - len(chunk))  # fixed batch: no recompiles
                a = np.stack([_pad(pairs[i][0], hb, wb) for i in full])
                b = np.stack([_pad(pairs[i][1], hb, wb) for i in full])
                hw = np.array([pairs[i][0].shape[:2] for i in full], np.int32)
                p, q = jax.device_get(self.fn(a, b, hw, win))
                psnr[chunk], ssim[chunk] = p[:len(chunk)], q[:len(chunk)]
        return psnr, ssim


def _bucket_shape(shape) -> Tuple[int, int]:
    return (-(-shape[0] // BUCKET) * BUCKET, -(-shape[1] // BUCKET) * BUCKET)


def _pad(x: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)))


def run(workdir: str | None, which: str | int = "best", data: str | None = None, noise_specs: Sequence[str] = (),
        baselines: Sequence[str] = (), resize: int | None = None, seed: int | None = None, tile: int | None = None,
        overlap: int = 32, batch: int = 8, grid_path: str | None = None, grid_count: int = 3,
        limit: int | None = None, noisy: str | None = None, also: Sequence[str] = (),
        noise_level: str | None = None, json_path: str | None = None, overwrite: bool = False,
        models: Sequence[str] = (), ensemble: int = 1) -> List[Dict]:
    """The evaluation table: per noise spec, rows for the noisy input, the model and each baseline.

    ``also``: more run workdirs whose models are scored on the same noisy images, a row each after the
    first model's (the data, seed and default noise are the first run's). ``models``: zoo model names or
    exported ``.jaxdn`` files (``inference.load``), a row each after the runs'; with no ``workdir`` they are
    the only models, and ``data`` and ``noise_specs`` (else the first model's validation noise) are needed.
    ``ensemble`` > 1: each model also gets a row ``NAME, xN self-ensemble``, its outputs averaged over N flips
    and rotations of the noisy image (``denoise.self_ensemble``).

    Rows: ``{noise, method, psnr, ssim, min_gain, sec_per_mp, images}`` (means over images; min_gain, the
    smallest per-image PSNR gain over the noisy input, on every row but the noisy input's; sec_per_mp excludes
    compilation). Baselines: names of ``baselines.AVAILABLE``, ``NAME:oracle`` for the true noise level. Data: ``data`` (a file or folder, images at their own size unless ``resize``) or the run's
    validation split; ``limit`` keeps the first N images. Noise for image i is drawn from
    ``fold_in(PRNGKey(seed), i)``: same command, same numbers.

    ``noisy``: a folder of real noisy photos instead of synthetic noise; each is paired with the clean
    reference in ``data`` of the same name (relative path without its extension, so formats may differ), and
    one row group, noise ``real:<folder name>``, scores them (a run trained on a store of real pairs,
    ``data.pairs``, is scored that way on its validation pairs by default); baselines estimate each image's noise level
    (``baselines.estimate_sigma``). Unpaired files on either side are listed, not fatal; no pair is an error.

    Non-blind models (``model.noise_level``) get the noise-level map drawn with the synthetic noise; on real
    noise, the map of ``noise_level`` (a fixed spec such as ``poisson:30``), else of the estimated Gaussian
    level (``denoise.with_level``).

    Several processes: each denoises and scores a contiguous share of the images (every process restores
    the model onto its own device), and the per-image scores are gathered, so the rows are those of one
    process; ``sec_per_mp`` is process 0's. Only process 0 writes the grid.

    Outputs: ``grid_path`` (a PNG) and ``json_path`` (the rows, ``write_json``) are checked before any work
    (``outputs.claim``: never an input, never a run's own file, an existing file only with ``overwrite``;
    ``eval_grid.png`` in a workdir is evaluate's own and is replaced).
    """
    from jaxdenoise import baselines as baselines_lib, checkpointing, layout, outputs
    from jaxdenoise.data import feed, imageio

    if not workdir and not models:
        raise ValueError("--workdir (a training run) or --model (a zoo name or an exported file) is required")
    if not workdir and not data:
        raise ValueError("--model without --workdir needs --data: the images to score (no run, no validation split)")
    denoiser.check_ensemble(ensemble, "--ensemble")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (the first N images), got {limit}")
    if seed is not None and not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2^32), got {seed}")
    if resize is not None and not imageio.MIN_SIDE <= resize <= imageio.MAX_SIZE:
        raise ValueError(f"--resize must be in [{imageio.MIN_SIDE}, {imageio.MAX_SIZE}] px, got {resize}")
    if noisy and not data:
        raise ValueError("--noisy needs --data: the folder of clean references, matched by file name")
    if noisy and noise_specs:
        raise ValueError(f"--noise {' '.join(noise_specs)} has no effect with --noisy: the real noisy shots are scored "
                         f"as they are; drop --noise, or drop --noisy to add synthetic noise to --data")
    if noisy and os.path.exists(noisy) and os.path.exists(data) and os.path.samefile(noisy, data):
        raise ValueError(f"--noisy {noisy} and --data {data} are the same folder: --noisy holds the noisy shots, "
                         f"--data their clean references")
    for b in baselines:
        baselines_lib.check(b)
    for spec in noise_specs:
        noise_lib.parse(spec)
    if noise_level:
        noise_lib.level_map(noise_level, np.zeros((1, 1, 1, 3), np.float32))  # a bad spec fails before any work
    inputs = [("--data", data), ("--noisy", noisy)] + [("--model", m) for m in models if os.path.isfile(m)]
    own = (os.path.join(workdir, layout.EVAL_GRID_FILE),) if workdir else ()  # evaluate's own file, own workdir
    targets = {"grid": grid_path and parallel.is_main() and outputs.claim(grid_path, "--grid", inputs=inputs,
                                                                          overwrite=overwrite, own=own, writable=False),
               "json": json_path and parallel.is_main() and outputs.claim(json_path, "--json", inputs=inputs,
                                                                          overwrite=overwrite)}
    if targets["grid"] and targets["json"] and targets["grid"].path == targets["json"].path:
        raise ValueError(f"--grid and --json name the same file {json_path}")

    runs, shipped = [], []  # (workdir, Denoiser) of training runs; (name or file, Denoiser) of --model
    for flag, w in ([("--workdir", workdir)] if workdir else []) + [("--also", a) for a in also]:
        try:
            runs.append((w, load.load_run(w, which, overlap=overlap)))
        except checkpointing.CheckpointError as e:  # say which of the runs it is
            raise checkpointing.CheckpointError(f"{flag} {w}: {e}") from None
    for m in models:
        try:
            shipped.append((m, load.load(m, overlap=overlap)))
        except ValueError as e:
            raise type(e)(f"--model {m}: {e}") from None
    if workdir:
        config = checkpointing.read_run_config(workdir)
    else:  # no run: the defaults, and the first model's validation noise
        from jaxdenoise import config as config_lib
        config = config_lib.base_config()
        config.eval_noise = shipped[0][1].info.get("eval_noise") or "poisson:30"
    for w, den in runs + shipped:
        tiling.check_tiling(tile or 0, overlap, den.stride, den.receptive_field, f"model of {w}")
    if noise_level and (not noisy or all(den.blind for _, den in runs + shipped)):
        print(f"note: --noise-level {noise_level} is not used: " + (
            "the models are blind (3 input channels)" if noisy else
            "on synthetic noise non-blind models get the level map of the noise drawn"), file=sys.stderr)
    if noisy:
        named, real = _pairs(data, noisy, resize)
    elif data:
        named, skipped = load_folder(data, resize)
        for s in skipped:
            print(f"skipped {s['path']}: {s['reason']}")
    else:
        val_path = feed.resolve_val_store(config, workdir)  # a run's data.val_dir is its validation set
        split = (store.open_splits(val_path, "all") if val_path
                 else store.open_splits(feed.resolve_stores(config, workdir), "val"))
        named = [(f"val/{i:06d}", np.asarray(split[i])) for i in range(split.shape[0])]
        if named and named[0][1].shape[-1] == 6:  # a store of real pairs: clean ++ noisy channels
            real = [img[..., 3:] for _, img in named]
            named = [(name, img[..., :3]) for name, img in named]
            noisy = "val"
    if limit:
        named, real = named[:limit], (real[:limit] if noisy else None)
    total = len(named)
    share = parallel.local_share(total)  # the whole list in a single process
    named, offset = named[share], share.start
    if noisy:
        real = real[share]
    seed = config.eval_seed if seed is None else seed
    fns_models = {}  # row name -> denoiser
    for w, den in runs + shipped:
        weights = " EMA" if den.info.get("weights") == "ema" else ""
        name = (f"{den.info['model']} (zoo: {den.info['zoo']})" if den.info.get("zoo") else
                f"{den.info['model']} (step {den.info['step']}{weights})")
        name = name if name not in fns_models else f"{name} {w}"
        for n in sorted({1, ensemble}):
            fns_models[name if n == 1 else f"{name}, x{n} self-ensemble"] = (lambda d, n: lambda y, lvl: d.run(
                y, lvl, noise_level, tile=tile, batch=batch, ensemble=n))(den, n)
    key = jax.random.PRNGKey(seed)
    clean = [img.astype(np.float32) / 255.0 for _, img in named]
    if noisy:
        label = f"real:{os.path.basename(os.path.normpath(noisy))}" + (" (pairs store)" if noisy == "val" else "")
        groups = [(label, None,
                   [img.astype(np.float32) / 255.0 for img in real])]
    else:
        groups = [(spec, noise_lib.parse(spec), None) for spec in noise_specs or [config.eval_noise or config.noise]]
    scorer = _Scorer()
    rows, grid_cols, grid_labels = [], [], None
    first_of_each_shape = sorted({_bucket_shape(c.shape): i for i, c in reversed(list(enumerate(clean)))}.values())
    for label, model_noise, noisy_images in groups:
        levels = [None] * len(clean)  # noise-level maps for non-blind models; None: from noise_level/estimate
        if noisy_images is None:
            add_noise = jax.jit(lambda k, x: jax.tree.map(lambda a: a[0], model_noise.sample(k, x[None])))
            noisy_images = []
            for i, c in enumerate(clean):  # noise on the bucket-padded image: a few shapes, a few compilations
                hb, wb = _bucket_shape(c.shape)
                y, lvl = jax.device_get(add_noise(jax.random.fold_in(key, offset + i), _pad(c, hb, wb)))
                noisy_images.append(y[:c.shape[0], :c.shape[1]])
                levels[i] = lvl[:c.shape[0], :c.shape[1]]
        fns = {"noisy input": lambda i: noisy_images[i]}
        fns.update({name: (lambda f: lambda i: f(noisy_images[i], levels[i]))(f) for name, f in fns_models.items()})
        fns.update({baselines_lib.label(b): (lambda f: lambda i: f(noisy_images[i], clean[i]))(
            baselines_lib.make(b, model_noise)) for b in baselines})
        megapixels = max(sum(c.shape[0] * c.shape[1] for c in clean) / 1e6, 1e-12)
        outputs = {}  # name -> (the first grid_count outputs, s/MP, psnr [N], ssim [N])
        for name, fn in fns.items():
            if name != "noisy input":  # warm-up: a model compiles once per bucket shape, out of the timing
                for i in (first_of_each_shape if name in fns_models else first_of_each_shape[:1]):
                    fn(i)
            # one image at a time, scored in batches as it goes: only the grid's few outputs are kept
            kept, scores, pending, seconds = [], ([], []), [], 0.0
            for i in _progress(len(clean), f"{label}: {name}"):
                t0 = time.perf_counter()
                out = fn(i)
                seconds += time.perf_counter() - t0
                if i < grid_count:
                    kept.append(out)
                pending.append((clean[i], out))
                if len(pending) == scorer.batch or i == len(clean) - 1:
                    for acc, v in zip(scores, scorer(pending)):
                        acc.extend(v)
                    pending = []
            outputs[name] = (kept, seconds / megapixels, np.asarray(scores[0]), np.asarray(scores[1]))
        noisy_psnr = None
        for name, (outs, spmp, psnr, ssim) in outputs.items():
            psnr, ssim = parallel.gather_shares(psnr), parallel.gather_shares(ssim)  # every image, in order
            row = {"noise": label, "method": name, "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
                   "sec_per_mp": spmp, "images": total}
            if noisy_psnr is None:
                noisy_psnr = psnr  # the first row is the noisy input
            else:  # the worst image's gain: a denoiser that makes any image worse shows a negative number
                row["min_gain"] = float(np.min(psnr - noisy_psnr))
            rows.append(row)
        if grid_path and not grid_cols and parallel.is_main():
            grid_cols, grid_labels = _grid_columns(clean, outputs, grid_count), ["clean"] + list(outputs)
    if targets["grid"] and grid_cols:
        from jaxdenoise import plots
        try:  # the numbers matter more than the figure: a grid that cannot be written is a warning
            targets["grid"].write(plots.png_writer(plots.image_grid(grid_cols, labels=grid_labels)))
        except (OSError, ValueError) as e:
            why = fsutil.describe(e, grid_path) if isinstance(e, OSError) else str(e)
            print(f"warning: comparison grid not written: {why}", file=sys.stderr)
    if targets["json"]:
        write_json(rows, targets["json"])
    if parallel.is_main():  # each evaluated run's model card gains the table
        from jaxdenoise import model_card
        where = data or ("validation split" if not noisy else noisy)
        where = f"{where} (noisy: {noisy})" if noisy and data else where
        for w, _ in runs:
            model_card.add_evaluation(w, rows, data=where, checkpoint=str(which),
                                      noise=[g[0] for g in groups], baselines=baselines)
    return rows


def _pairs(clean_dir: str, noisy_dir: str, resize: int | None):
    """(clean [(name, uint8 image)], noisy [uint8 image]) matched by relative path without extension; a pair
    whose sizes differ, or that pairs a grey image with a colour one, is skipped with its reason."""
    from jaxdenoise.data import imageio
    clean, skipped_c = load_folder(clean_dir, resize, "--data")
    noisy, skipped_n = load_folder(noisy_dir, resize, "--noisy")
    for s in skipped_c + skipped_n:
        print(f"skipped {s['path']}: {s['reason']}")
    stem = lambda rel: os.path.splitext(rel)[0]
    for side, flag, folder in ((clean, "--data", clean_dir), (noisy, "--noisy", noisy_dir)):
        seen: Dict[str, List[str]] = {}
        for rel, _ in side:
            seen.setdefault(stem(rel), []).append(rel)
        for name, rels in seen.items():
            if len(rels) > 1:  # which one is the pair's partner cannot be told
                raise ValueError(f"{flag} {folder}: {len(rels)} files share the name {name!r} "
                                 f"({', '.join(rels)}): pairs are matched by name without the extension")
    by_stem = {}
    for rel, img in noisy:
        by_stem.setdefault(stem(rel), []).append((rel, img))
    named, real = [], []
    for rel, img in clean:
        match = by_stem.pop(stem(rel), None)
        if not match:
            print(f"no noisy shot for clean {rel}")
            continue
        nrel, nimg = match[0]
        why = imageio.pair_mismatch(img, nimg)
        if why:  # one bad pair is skipped with its reason; the others are scored
            print(f"skipped {rel} / {nrel}: {why}")
            continue
        if np.array_equal(nimg, img):
            print(f"warning: noisy {nrel} is identical to its clean reference {rel} (it scores 100 dB)",
                  file=sys.stderr)
        named.append((rel, img))
        real.append(nimg)
    for left in by_stem.values():
        print(f"no clean reference for noisy {left[0][0]}")
    if not named:
        raise ValueError(f"no noisy file in {noisy_dir} has a clean reference of the same name in {clean_dir}")
    return named, real


# evaluate's progress: a bar on a terminal, else (a log) a line every this many images, and at the end
PROGRESS_EVERY = 20


def _progress(n: int, what: str):
    """``range(n)``, saying how far it got on stderr: tqdm's bar on a terminal, a line per ``PROGRESS_EVERY``
    images in a log (a long evaluation is never silent)."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        yield from tqdm(range(n), desc=what, unit="img", file=sys.stderr, leave=False, disable=n < 2)
        return
    t0 = time.monotonic()  # (perf_counter times the methods)
    for i in range(n):
        yield i
        if n >= PROGRESS_EVERY and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == n):
            print(f"evaluate: {what}: {i + 1}/{n} images ({time.monotonic() - t0:.0f} s)", file=sys.stderr,
                  flush=True)


def _grid_columns(clean, outputs, count) -> List[np.ndarray]:
    """clean | noisy | model | baselines, centre crops of the first ``count`` images at a common size."""
    count = min(count, len(clean))
    side = min(min(c.shape[:2]) for c in clean[:count])
    side = min(side, 256)

    def crop(x):
        y0, x0 = (x.shape[0] - side) // 2, (x.shape[1] - side) // 2
        return x[y0:y0 + side, x0:x0 + side]
    cols = [np.stack([crop(c) for c in clean[:count]])]
    cols += [np.stack([crop(o) for o in outs[:count]]) for outs, *_ in outputs.values()]
    return cols


def write_json(rows: Sequence[Dict], target) -> str:
    """The rows as marked JSON (``{"written_by": "jaxdenoise", "rows": [...]}``, ``marks.json_text``), atomically; ``target`` is an ``outputs.Target`` or a path (claimed here, so an
    existing file is refused). Non-finite numbers become ``null`` (JSON has no NaN)."""
    from jaxdenoise import outputs
    if not isinstance(target, outputs.Target):
        target = outputs.claim(target, "--json")
    keep = ("noise", "method", "psnr", "ssim", "min_gain", "sec_per_mp", "images")
    clean = [{k: _finite(r[k]) for k in keep if k in r} for r in rows]
    from jaxdenoise import marks
    return target.write(marks.json_text(clean))


def _finite(v):
    return None if isinstance(v, float) and not np.isfinite(v) else v


def format_table(rows: Sequence[Dict]) -> str:
    """A fixed-width table of evaluation rows, with the metric convention underneath. ``min_gain``: the
    smallest per-image PSNR gain over the noisy input (dB)."""
    cols = [("noise", "{}"), ("method", "{}"), ("psnr", "{:.2f}"), ("ssim", "{:.4f}"), ("min_gain", "{:+.2f}"),
            ("images", "{}")]
    extra = [("sec_per_mp", "{:.3f}")] if any("sec_per_mp" in r for r in rows) else []
    cols += extra
    cells = [[c for c, _ in cols]] + [[fmt.format(r[c]) if c in r else "" for c, fmt in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n(PSNR dB / SSIM: {metrics_lib.CONVENTION})"
