"""Evaluate a trained run from its workdir alone: checkpoint -> metrics at one or more noise specs."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


@dataclasses.dataclass
class Request:
    """What ``run`` scores, and where it writes (the fields are ``scripts/evaluate.py``'s flags):

    ``workdir`` and ``which``: a run and its checkpoint; ``also``: more run workdirs whose models are scored
    on the same noisy images, a row each after the first model's (the data, seed and default noise are the
    first run's). ``models``: zoo model names or exported ``.jaxdn`` files (``inference.load``), a row each
    after the runs'; with no ``workdir`` they are the only models, and ``data`` and ``noise_specs`` (else the
    first model's validation noise) are needed. ``ensemble`` > 1: each model also gets a row ``NAME, xN
    self-ensemble`` (``denoiser.self_ensemble``).

    ``data`` (a file or folder, images at their own size unless ``resize``) or the run's validation split;
    ``limit`` keeps the first N images; ``noisy``: a folder of real noisy photos paired by name with the clean
    references in ``data``. ``noise_specs`` (default: the run's validation noise); noise for image i is drawn
    from ``fold_in(PRNGKey(seed), i)``: same command, same numbers. ``noise_level``: the map non-blind models
    get on real noise (else the estimated Gaussian level). ``baselines``: names of ``baselines.AVAILABLE``,
    ``NAME:oracle`` for the true noise level. ``tile``, ``overlap``, ``batch``: the Denoiser's tiling.
    ``grid_path`` (a PNG of the first ``grid_count`` images) and ``json_path`` (the rows) are checked before
    any work (``outputs.claim``: never an input, never a run's own file, an existing one only with
    ``overwrite`` and jaxdenoise's mark; ``eval_grid.png`` in a workdir is evaluate's own and is replaced).
    """
    workdir: Optional[str] = None
    which: str | int = "best"
    data: Optional[str] = None
    noise_specs: Sequence[str] = ()
    baselines: Sequence[str] = ()
    resize: Optional[int] = None
    seed: Optional[int] = None
    tile: Optional[int] = None
    overlap: int = 32
    batch: int = 8
    grid_path: Optional[str] = None
    grid_count: int = 3
    limit: Optional[int] = None
    noisy: Optional[str] = None
    also: Sequence[str] = ()
    noise_level: Optional[str] = None
    json_path: Optional[str] = None
    overwrite: bool = False
    models: Sequence[str] = ()
    ensemble: int = 1


def run(workdir: str | None = None, which: str | int = "best", **fields) -> List[Dict]:
    """The evaluation table of ``Request(workdir, which, **fields)``: per noise spec, rows for the noisy input,
    each model and each baseline.

    Rows: ``{noise, method, psnr, ssim, min_gain, sec_per_mp, images}`` (means over images; min_gain, the
    smallest per-image PSNR gain over the noisy input, on every row but the noisy input's; sec_per_mp excludes
    compilation). Real noise (``noisy``, or a run trained on a store of real pairs, ``data.pairs``, on its
    validation pairs by default): one row group, noise ``real:<folder name>``; unpaired files on either side
    are listed, not fatal; no pair is an error. Non-blind models get the noise-level map drawn with the
    synthetic noise. Several processes: each denoises and scores a contiguous share of the images, the
    per-image scores are gathered (the rows are those of one process; ``sec_per_mp`` is process 0's) and only
    process 0 writes. Each evaluated run's model card gains the table. Raises ValueError (one line) for a bad
    request, before any work."""
    req = Request(workdir, which, **fields)
    targets = _check(req)
    runs, shipped, config = _load_models(req)
    images = _load_images(req, config)
    groups = _noise_groups(req, config, images)
    rows, grid = _score(req, runs + shipped, images, groups, config)
    _write(req, targets, rows, grid, runs, groups)
    return rows


@dataclasses.dataclass
class _Images:
    """The clean images scored (this process's share), and their real noisy shots when there are."""
    clean: List[np.ndarray]           # float32 [H, W, 3] in [0, 1]
    real: Optional[List[np.ndarray]]  # float32 noisy shots of the same sizes, or None: synthetic noise
    real_label: str
    total: int                        # images over all processes
    offset: int                       # this process's first image


def _check(req: Request) -> Dict[str, Any]:
    """Refuse a bad request in one line before any work; claim the outputs (``{"grid", "json"}`` targets)."""
    from jaxdenoise import baselines as baselines_lib, layout, outputs
    from jaxdenoise.data import imageio
    if not req.workdir and not req.models:
        raise ValueError("--workdir (a training run) or --model (a zoo name or an exported file) is required")
    if not req.workdir and not req.data:
        raise ValueError("--model without --workdir needs --data: the images to score (no run, no validation split)")
    denoiser.check_ensemble(req.ensemble, "--ensemble")
    if req.limit is not None and req.limit < 1:
        raise ValueError(f"--limit must be >= 1 (the first N images), got {req.limit}")
    if req.seed is not None and not 0 <= req.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2^32), got {req.seed}")
    if req.resize is not None and not imageio.MIN_SIDE <= req.resize <= imageio.MAX_SIZE:
        raise ValueError(f"--resize must be in [{imageio.MIN_SIDE}, {imageio.MAX_SIZE}] px, got {req.resize}")
    if req.noisy and not req.data:
        raise ValueError("--noisy needs --data: the folder of clean references, matched by file name")
    if req.noisy and req.noise_specs:
        raise ValueError(f"--noise {' '.join(req.noise_specs)} has no effect with --noisy: the real noisy shots are scored "
                         f"as they are; drop --noise, or drop --noisy to add synthetic noise to --data")
    if req.noisy and os.path.exists(req.noisy) and os.path.exists(req.data) and os.path.samefile(req.noisy, req.data):
        raise ValueError(f"--noisy {req.noisy} and --data {req.data} are the same folder: --noisy holds the noisy shots, "
                         f"--data their clean references")
    for b in req.baselines:
        baselines_lib.check(b)
    for spec in req.noise_specs:
        noise_lib.parse(spec)
    if req.noise_level:
        noise_lib.level_map(req.noise_level, np.zeros((1, 1, 1, 3), np.float32))  # a bad spec fails before any work
    inputs = [("--data", req.data), ("--noisy", req.noisy)] + [("--model", m) for m in req.models if os.path.isfile(m)]
    own = (os.path.join(req.workdir, layout.EVAL_GRID_FILE),) if req.workdir else ()  # evaluate's own file, own workdir
    targets = {"grid": req.grid_path and parallel.is_main() and outputs.claim(req.grid_path, "--grid", inputs=inputs,
                                                                          overwrite=req.overwrite, own=own, writable=False),
               "json": req.json_path and parallel.is_main() and outputs.claim(req.json_path, "--json", inputs=inputs,
                                                                          overwrite=req.overwrite)}
    if targets["grid"] and targets["json"] and targets["grid"].path == targets["json"].path:
        raise ValueError(f"--grid and --json name the same file {req.json_path}")

    return targets


def _load_models(req: Request):
    """(runs, shipped, config): ``(workdir, Denoiser)`` of the training runs, ``(name or file, Denoiser)`` of
    ``--model``, and the config whose data, seed and noise the scoring uses (the first run's, else the
    defaults with the first model's validation noise)."""
    from jaxdenoise import checkpointing
    runs, shipped = [], []  # (workdir, Denoiser) of training runs; (name or file, Denoiser) of --model
    for flag, w in ([("--workdir", req.workdir)] if req.workdir else []) + [("--also", a) for a in req.also]:
        try:
            runs.append((w, load.load_run(w, req.which, overlap=req.overlap)))
        except checkpointing.CheckpointError as e:  # say which of the runs it is
            raise checkpointing.CheckpointError(f"{flag} {w}: {e}") from None
    for m in req.models:
        try:
            shipped.append((m, load.load(m, overlap=req.overlap)))
        except ValueError as e:
            raise type(e)(f"--model {m}: {e}") from None
    if req.workdir:
        config = checkpointing.read_run_config(req.workdir)
    else:  # no run: the defaults, and the first model's validation noise
        from jaxdenoise import config as config_lib
        config = config_lib.base_config()
        config.eval_noise = shipped[0][1].info.get("eval_noise") or "poisson:30"
    for w, den in runs + shipped:
        tiling.check_tiling(req.tile or 0, req.overlap, den.stride, den.receptive_field, f"model of {w}")
    if req.noise_level and (not req.noisy or all(den.blind for _, den in runs + shipped)):
        print(f"note: --noise-level {req.noise_level} is not used: " + (
            "the models are blind (3 input channels)" if req.noisy else
            "on synthetic noise non-blind models get the level map of the noise drawn"), file=sys.stderr)
    return runs, shipped, config


def _load_images(req: Request, config) -> _Images:
    """The clean images (``data``, else the run's validation split) and, on real noise, their noisy shots:
    ``noisy``'s pairs, or a store of real pairs' noisy half; the first ``limit``; this process's share."""
    from jaxdenoise.data import feed
    noisy, real = req.noisy, None
    if noisy:
        named, real = _pairs(req.data, noisy, req.resize)
    elif req.data:
        named, skipped = load_folder(req.data, req.resize)
        for s in skipped:
            print(f"skipped {s['path']}: {s['reason']}")
    else:
        val_path = feed.resolve_val_store(config, req.workdir)  # a run's data.val_dir is its validation set
        split = (store.open_splits(val_path, "all") if val_path
                 else store.open_splits(feed.resolve_stores(config, req.workdir), "val"))
        named = [(f"val/{i:06d}", np.asarray(split[i])) for i in range(split.shape[0])]
        if named and named[0][1].shape[-1] == 6:  # a store of real pairs: clean ++ noisy channels
            real = [img[..., 3:] for _, img in named]
            named = [(name, img[..., :3]) for name, img in named]
            noisy = "val"
    if req.limit:
        named, real = named[:req.limit], (real[:req.limit] if real is not None else None)
    total = len(named)
    share = parallel.local_share(total)  # the whole list in a single process
    named = named[share]
    label = ""
    if real is not None:
        real = [img.astype(np.float32) / 255.0 for img in real[share]]
        label = f"real:{os.path.basename(os.path.normpath(noisy))}" + (" (pairs store)" if noisy == "val" else "")
    return _Images([img.astype(np.float32) / 255.0 for _, img in named], real, label, total, share.start)


@dataclasses.dataclass
class _Group:
    """One row group: a noise (a spec, or real shots) and the noisy images with their level maps."""
    label: str
    model: Any                            # the NoiseModel drawn (None: real noise)
    noisy: List[np.ndarray]               # float32 [H, W, 3], this process's share
    levels: List[Optional[np.ndarray]]    # non-blind models' maps [H, W, 1]; None: from noise_level / estimate


def _noise_groups(req: Request, config, images: _Images) -> List[_Group]:
    """The real shots as one group, else a group per noise spec (default: the run's validation noise), its
    noisy images drawn when it is scored (``_draw``: one group's images in memory at a time)."""
    if images.real is not None:
        return [_Group(images.real_label, None, images.real, [None] * len(images.clean))]
    return [_Group(spec, noise_lib.parse(spec), [], []) for spec in req.noise_specs or [config.eval_noise or config.noise]]


def _draw(group: _Group, images: _Images, seed: int) -> None:
    """Synthetic noise for image i drawn from ``fold_in(PRNGKey(seed), i)`` on its bucket-padded shape (a few
    compilations per folder), with its level map: same command, same numbers."""
    key = jax.random.PRNGKey(seed)
    add_noise = jax.jit(lambda k, x: jax.tree.map(lambda a: a[0], group.model.sample(k, x[None])))
    for i, c in enumerate(images.clean):
        hb, wb = _bucket_shape(c.shape)
        y, lvl = jax.device_get(add_noise(jax.random.fold_in(key, images.offset + i), _pad(c, hb, wb)))
        group.noisy.append(y[:c.shape[0], :c.shape[1]])
        group.levels.append(lvl[:c.shape[0], :c.shape[1]])


@dataclasses.dataclass
class _Method:
    """A row's method: the noisy input itself, a model (a Denoiser at an ensemble size) or a baseline."""
    name: str
    den: Any = None        # a Denoiser
    ensemble: int = 1
    baseline: Any = None   # baselines.make(...): (noisy, clean) -> denoised

    def __call__(self, req: Request, group: _Group, clean: List[np.ndarray], i: int) -> np.ndarray:
        if self.den is not None:
            return self.den.run(group.noisy[i], group.levels[i], req.noise_level, tile=req.tile, batch=req.batch,
                                ensemble=self.ensemble)
        if self.baseline is not None:
            return self.baseline(group.noisy[i], clean[i])
        return group.noisy[i]


def _model_methods(req: Request, models) -> List[_Method]:
    """A method per model (named by its zoo entry or its step and weights; a second run of the same name gets
    its workdir appended) and per ensemble size asked."""
    out, names = [], set()
    for w, den in models:
        weights = " EMA" if den.info.get("weights") == "ema" else ""
        name = (f"{den.info['model']} (zoo: {den.info['zoo']})" if den.info.get("zoo") else
                f"{den.info['model']} (step {den.info['step']}{weights})")
        name = name if name not in names else f"{name} {w}"
        names.add(name)
        for n in sorted({1, req.ensemble}):
            out.append(_Method(name if n == 1 else f"{name}, x{n} self-ensemble", den=den, ensemble=n))
    return out


def _score(req: Request, models, images: _Images, groups: List[_Group], config) -> Tuple[List[Dict], Any]:
    """(rows, grid): per group, every method run on each image in turn (its first image of each shape first,
    out of the timing: compilation) and scored as it goes; only the grid's few outputs are kept."""
    from jaxdenoise import baselines as baselines_lib
    clean, scorer, rows, grid = images.clean, _Scorer(), [], None
    first_of_each_shape = sorted({_bucket_shape(c.shape): i for i, c in reversed(list(enumerate(clean)))}.values())
    megapixels = max(sum(c.shape[0] * c.shape[1] for c in clean) / 1e6, 1e-12)
    for group in groups:
        if group.model is not None:
            _draw(group, images, config.eval_seed if req.seed is None else req.seed)
        methods = ([_Method("noisy input")] + _model_methods(req, models)
                   + [_Method(baselines_lib.label(b), baseline=baselines_lib.make(b, group.model))
                      for b in req.baselines])
        results = {}  # name -> (the first grid_count outputs, s/MP, psnr [N], ssim [N])
        for method in methods:
            if method.name != "noisy input":  # warm-up: a model compiles once per bucket shape
                for i in (first_of_each_shape if method.den is not None else first_of_each_shape[:1]):
                    method(req, group, clean, i)
            kept, scores, pending, seconds = [], ([], []), [], 0.0
            for i in _progress(len(clean), f"{group.label}: {method.name}"):
                t0 = time.perf_counter()
                out = method(req, group, clean, i)
                seconds += time.perf_counter() - t0
                if i < req.grid_count:
                    kept.append(out)
                pending.append((clean[i], out))
                if len(pending) == scorer.batch or i == len(clean) - 1:
                    for acc, v in zip(scores, scorer(pending)):
                        acc.extend(v)
                    pending = []
            results[method.name] = (kept, seconds / megapixels, np.asarray(scores[0]), np.asarray(scores[1]))
        rows += _rows(group.label, results, images.total)
        if req.grid_path and grid is None and parallel.is_main():
            grid = (_grid_columns(clean, results, req.grid_count), ["clean"] + list(results))
        if group.model is not None:
            group.noisy, group.levels = [], []  # the next group's images replace these
    return rows, grid


def _rows(label: str, results: Dict, total: int) -> List[Dict]:
    """The group's rows: means over every image (gathered from all processes); the worst image's gain over
    the noisy input (the first result) on the others."""
    rows, noisy_psnr = [], None
    for name, (_, spmp, psnr, ssim) in results.items():
        psnr, ssim = parallel.gather_shares(psnr), parallel.gather_shares(ssim)  # every image, in order
        row = {"noise": label, "method": name, "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
               "sec_per_mp": spmp, "images": total}
        if noisy_psnr is None:
            noisy_psnr = psnr
        else:  # a denoiser that makes any image worse shows a negative number
            row["min_gain"] = float(np.min(psnr - noisy_psnr))
        rows.append(row)
    return rows


def _write(req: Request, targets: Dict[str, Any], rows: List[Dict], grid, runs, groups: List[_Group]) -> None:
    """The grid (a warning if it cannot be written: the numbers matter more), the JSON rows, and the table
    in each evaluated run's model card."""
    if targets["grid"] and grid:
        from jaxdenoise import plots
        try:
            targets["grid"].write(plots.png_writer(plots.image_grid(grid[0], labels=grid[1])))
        except (OSError, ValueError) as e:
            why = fsutil.describe(e, req.grid_path) if isinstance(e, OSError) else str(e)
            print(f"warning: comparison grid not written: {why}", file=sys.stderr)
    if targets["json"]:
        write_json(rows, targets["json"])
    if parallel.is_main():
        from jaxdenoise import model_card
        where = req.data or ("validation split" if not req.noisy else req.noisy)
        where = f"{where} (noisy: {req.noisy})" if req.noisy and req.data else where
        for w, _ in runs:
            model_card.add_evaluation(w, rows, data=where, checkpoint=str(req.which),
                                      noise=[g.label for g in groups], baselines=req.baselines)


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
