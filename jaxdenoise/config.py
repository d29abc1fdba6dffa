"""The config schema: every field with its default, and the checks that turn bad values into one-line errors.

Experiments in ``configs/`` start from ``base_config()`` and override fields; ``lock_config`` (done by the
command line) makes a mistyped field an error, and ``validate`` rejects bad values before anything runs.
"""
from __future__ import annotations

import importlib.util
import itertools
import os

import ml_collections

from jaxdenoise import losses, models, noise as noise_lib, steps, targets
from jaxdenoise.data import data_dirs
from jaxdenoise.data.imageio import MAX_SIZE, RESIZE_MODES


# Over 60 lines: one field per line, each with its meaning; split, the schema would have no single page.
def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0                      # params init, noise stream and data order
    c.model = models.default_config("paper")  # configs replace it: c.model = models.default_config("unet", ...)
    c.noise = "poisson:30"          # training noise spec (see jaxdenoise.noise)
    c.eval_noise = ""               # validation noise spec; "" = the training spec (ranges: per-image draws, fixed seed)
    c.dtype = "float32"             # activations/convs: float32 | bfloat16 (params and optimiser stay float32)

    c.optimizer = "adam"            # adam | adamw (decoupled weight decay) | sgd
    c.learning_rate = 1e-3
    c.momentum = 0.9                # sgd only; 0 = plain SGD
    c.b1 = 0.9                      # adam / adamw: first-moment decay (NAFNet: 0.9)
    c.b2 = 0.999                    # adam / adamw: second-moment decay (NAFNet: 0.9)
    c.weight_decay = 0.0            # adamw only: decoupled weight decay, on every parameter (as NAFNet's AdamW)
    c.loss = "mse"                  # mse | l1 | charbonnier | psnr (jaxdenoise.losses)
    c.target = "clean"              # clean | noise2noise | neighbor2neighbor | recorrupted (jaxdenoise.targets):
                                    # what the output is compared with; the last three need no clean image
    c.target_gamma = targets.N2N_GAMMA  # neighbor2neighbor: regulariser weight, ramped from 0 (the paper's 2; 0 trains faster on a CPU budget: docs/quality.md)
    c.target_alpha = targets.R2R_ALPHA  # recorrupted: the target's share of the split, in (0, 1) (0.1: targets.py)
    c.noise_fixed = False           # each training image gets its noise once (keyed by its index), the same every
                                    # epoch, as a real noisy dataset; False = fresh noise every step ("re-noised")
    c.schedule = "constant"         # constant | cosine (to 0 at the last step)
    c.warmup_steps = 0
    c.grad_clip = 0.0               # global-norm clipping; 0 = off
    c.ema_decay = 0.0               # EMA of the parameters (e.g. 0.999), evaluated and checkpointed; 0 = off

    c.batch_size = 16               # global batch (split over devices on the 'data' mesh axis)
    c.num_epochs = 25
    c.steps_per_epoch = 0           # 0 = one full pass over the training split
    c.steps_per_call = 1            # k train steps fused in one jit call (lax.scan)
    c.micro_batch = 0               # images per device per gradient chunk; 0 = auto (CPU: one 64x64, else all)

    c.eval_every_epochs = 1
    c.eval_batch_size = 64
    c.eval_seed = 1234              # fixed noise of the validation images (same every epoch)
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000  # 0 = only at evaluations and at the end
    c.num_grid_images = 6

    c.data = ml_collections.ConfigDict()
    c.data.source = "builtin"       # builtin | dir
    c.data.dir = ""                 # raw image folder (prepared on first use) or a prepared store; several,
                                    # comma-separated ("bsds400,sun80"): each prepared once, trained on together
    c.data.size = 128
    c.data.val_fraction = 0.2
    c.data.split_seed = 0
    c.data.resize_mode = "resize"   # resize | center_crop | full (own size, for data.patch training)
    c.data.max_side = 1024          # full: longer sides are shrunk to this; size = the shortest short side kept
    c.data.cache_dir = ""           # folder of prepared stores, one subfolder each ("" = WORKDIR/data, ~/.cache)
    c.data.pairs = False            # data.dir folders hold real pairs, clean/ and noisy/ (same names): trained on
                                    # with noise="none", kept at full size (data.resize_mode="full")
    c.data.val_dir = ""             # a folder to validate on, all of it (the data.dir folders are then trained on
                                    # whole); clean/ + noisy/ inside: real pairs (for noise='none' runs on noisy
                                    # photos alone); "" = each data.dir folder's own val_fraction split
    c.data.patch = 0                # train on random patch x patch crops (0 = whole images)
    c.data.flips = False            # random flips (training only)
    c.data.rot90 = False            # random 90-degree rotations (training only)
    c.data.channels = False         # random order of each image's R, G, B (colour augmentation, training only)
    c.data.num_threads = 0          # grain read threads (0 = min(8, cores))
    c.data.prefetch = 8             # grain prefetch buffer (batches)
    c.data.device_resident = False  # keep the training split on the device, gather batches there
    c.data.builtin_train_crops = 256  # built-in data: crops per training photo
    c.data.builtin_val_crops = 16     # built-in data: crops per held-out photo (plus the whole photo)

    c.init_from = ""                # start from another run's checkpoint "WORKDIR[:STEP|best|latest]" (whole state),
    #                                 or a model's weights: "zoo:NAME" or an exported "FILE.jaxdn" (weights only)
    return c


# Fields that may change when a workdir is resumed: cadences, speed settings that give the same result
# (tested), the run's length, and where things are cached. Every other field defines the run (model,
# noise, seed, optimiser, learning rate, schedule, batch, data, dtype, evaluation noise) and is fixed by
# the workdir's config.json once a checkpoint exists.
MUTABLE_ON_RESUME = frozenset({
    "num_epochs", "eval_every_epochs", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
    "num_grid_images", "steps_per_call", "micro_batch", "init_from",
    "data.num_threads", "data.prefetch", "data.device_resident", "data.cache_dir",
})


def load_file(path: str, arg: str | None = None, *, module: bool = False):
    """The config file at ``path``: ``get_config()`` (or ``get_config(arg)``, as ``--config path:arg``), or the
    module itself with ``module=True``. Loaded by path, as the command line loads ``--config``: ``configs/`` is a
    folder of files, not a package, and a config builds on a sibling through this (``photos.py`` on
    ``unet_faces.py``, ``unet_photos.py`` on ``photos.py``)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config file {path} cannot be loaded (not a .py file?)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if module:
        return mod
    return mod.get_config() if arg is None else mod.get_config(arg)


def flatten(c) -> dict:
    """{"a.b": value} of a (nested) ConfigDict or dict; tuples and lists compare as lists."""
    out = {}
    for k, v in (c.items() if hasattr(c, "items") else []):
        if hasattr(v, "items"):
            out.update({f"{k}.{kk}": vv for kk, vv in flatten(v).items()})
        else:
            out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def with_defaults(saved) -> ml_collections.ConfigDict:
    """A saved config (dict or ConfigDict, e.g. a workdir's config.json) over ``base_config()``'s defaults:
    fields it lacks (written before they existed) take their default, ``model`` is taken whole."""
    out = base_config().to_dict()
    saved = saved.to_dict() if hasattr(saved, "to_dict") else dict(saved)
    for k, v in saved.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "model":
            out[k].update(v)
        else:
            out[k] = v
    return ml_collections.ConfigDict(out)




def _inside(path: str, root: str) -> bool:
    """``path`` strictly inside ``root`` (both resolved)."""
    return path != root and path.startswith(root.rstrip(os.sep) + os.sep)


def _same(field: str, a, b) -> bool:
    if field == "data.dir" and a and b:  # the same folders, named relatively or absolutely
        real = lambda v: [os.path.realpath(p) for p in data_dirs(v)]
        return real(a) == real(b)
    return a == b


def resume_changes(saved, new) -> tuple:
    """(fixed, mutable): lists of ``(field, saved value, new value)`` between a workdir's saved config and
    the config of a rerun. Fields the saved config lacks (written by an older version) compare against
    ``base_config()``'s default; fields it has that no longer exist are ignored."""
    old, cur, default = flatten(saved), flatten(new), flatten(base_config())
    fixed, mutable = [], []
    for field, value in cur.items():
        before = old.get(field, default.get(field, value))
        if not _same(field, before, value):
            (mutable if field in MUTABLE_ON_RESUME else fixed).append((field, before, value))
    return fixed, mutable


def noise_setting(config) -> str:
    """How the training noise was drawn, recorded in every metrics row and the model card: ``renoised`` (fresh
    synthetic noise every step: a synthetic benchmark's many noisy copies of each image), ``fixed``
    (``config.noise_fixed``: one noisy copy per image, as a real dataset) or ``real`` (noisy photos or real
    pairs: ``noise='none'``)."""
    if config.noise == "none":
        return "real"
    return "fixed" if config.get("noise_fixed", False) else "renoised"


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(f"config: {msg}")


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise ValueError with a one-line message naming the first bad field: the model and the recipe, then
    the data folders, then how the data's noise, targets and validation fit together."""
    _check_recipe(c)
    dirs, real = _check_data(c)
    _check_noise_and_targets(c, dirs, real)


def _check_recipe(c) -> None:
    """The model, dtype, noise specs, optimiser, loss, target, schedule, lengths and cadences, seeds."""
    try:  # the model checks its own fields
        models.check(c.model)
    except ValueError as e:
        raise ValueError(f"config: {e}") from None
    _need(c.dtype in models.DTYPES, f"dtype={c.dtype!r} is not one of {sorted(models.DTYPES)}")
    for field in ("noise", "eval_noise"):
        spec = c[field]
        if field == "eval_noise" and not spec:
            continue
        try:
            noise_lib.parse(spec)
        except ValueError as e:
            raise ValueError(f"config: {field}: {e}") from None
    _need(c.optimizer in steps.OPTIMIZERS, f"optimizer={c.optimizer!r} is not one of {', '.join(map(repr, steps.OPTIMIZERS))}")
    for field in ("b1", "b2"):
        _need(0 <= c[field] < 1, f"{field} must be in [0, 1), got {c[field]}")
    _need(c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}")
    _need(c.weight_decay == 0 or c.optimizer == "adamw",
         f"weight_decay={c.weight_decay:g} needs optimizer='adamw' (optimizer={c.optimizer!r} has no decoupled decay)")
    _need(c.loss in losses.LOSSES, f"loss={c.loss!r} is not one of {', '.join(losses.LOSSES)}")
    _need(c.target in targets.TARGETS, f"target={c.target!r} is not one of {', '.join(targets.TARGETS)}")
    _need(c.target_gamma >= 0, f"target_gamma must be >= 0, got {c.target_gamma}")
    _need(0 < c.target_alpha < 1, f"target_alpha must be in (0, 1), got {c.target_alpha}")
    if c.target == "recorrupted":  # it splits the noise it knows: the training noise's own model
        _need(c.noise != "none", "target='recorrupted' splits noise of a known model (noise='gaussian:S:noclip' or "
                                "'poisson:P:noclip'): real photos of unknown noise need target='neighbor2neighbor'")
        problem = noise_lib.parse(c.noise).split_problem(c.target_alpha)
        _need(not problem, f"target='recorrupted': {problem}")
    _need(c.schedule in steps.SCHEDULES, f"schedule={c.schedule!r} is not one of {', '.join(map(repr, steps.SCHEDULES))}")
    _need(c.learning_rate > 0, f"learning_rate must be > 0, got {c.learning_rate}")
    _need(0 <= c.momentum < 1, f"momentum must be in [0, 1), got {c.momentum}")
    _need(c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}")
    _need(c.num_epochs >= 1, f"num_epochs must be >= 1, got {c.num_epochs}")
    _need(c.steps_per_epoch >= 0, f"steps_per_epoch must be >= 0, got {c.steps_per_epoch}")
    _need(c.micro_batch >= 0, f"micro_batch must be >= 0 (0 = auto), got {c.micro_batch}")
    _need(c.steps_per_call >= 1, f"steps_per_call must be >= 1, got {c.steps_per_call}")
    _need(c.eval_every_epochs >= 1, f"eval_every_epochs must be >= 1, got {c.eval_every_epochs}")
    _need(c.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {c.eval_batch_size}")
    _need(c.log_every_steps >= 1, f"log_every_steps must be >= 1, got {c.log_every_steps}")
    _need(c.checkpoint_every_steps >= 0, f"checkpoint_every_steps must be >= 0, got {c.checkpoint_every_steps}")
    _need(c.warmup_steps >= 0, f"warmup_steps must be >= 0, got {c.warmup_steps}")
    _need(c.grad_clip >= 0, f"grad_clip must be >= 0, got {c.grad_clip}")
    _need(0 <= c.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {c.ema_decay}")
    _need(c.num_grid_images >= 0, f"num_grid_images must be >= 0, got {c.num_grid_images}")
    for field in ("seed", "eval_seed"):
        _need(0 <= c[field] < 2**32, f"{field} must be in [0, 2^32), got {c[field]}")


def _check_data(c) -> tuple:
    """The data source and folders (none twice, none inside another), sizes and resize mode; returns the
    folders named and their real paths."""
    _need(c.data.source in ("builtin", "dir"), f"data.source={c.data.source!r} is not 'builtin' or 'dir'")
    if c.data.source == "builtin":  # the built-in photos are crops: these fields would be silently ignored
        _need(not c.data.dir, f"data.dir={c.data.dir!r} is set but data.source='builtin': add "
                             f"--config.data.source=dir to train on that folder")
        _need(c.data.resize_mode == "resize", f"data.resize_mode={c.data.resize_mode!r} applies to data.source='dir' "
                                             f"(the built-in photos are random crops)")
        _need(c.data.builtin_train_crops >= 1, f"data.builtin_train_crops must be >= 1, got {c.data.builtin_train_crops}")
        _need(c.data.builtin_val_crops >= 0, f"data.builtin_val_crops must be >= 0, got {c.data.builtin_val_crops}")
    _need(0 <= c.data.split_seed < 2**32, f"data.split_seed must be in [0, 2^32), got {c.data.split_seed}")
    _need(c.data.num_threads >= 0, f"data.num_threads must be >= 0 (0 = min(8, cores)), got {c.data.num_threads}")
    _need(c.data.prefetch >= 0, f"data.prefetch must be >= 0, got {c.data.prefetch}")
    _need(c.data.source != "dir" or bool(c.data.dir), "data.source='dir' needs data.dir=/path/to/images")
    dirs = data_dirs(c.data.dir)
    _need(all(dirs), f"data.dir={c.data.dir!r} has an empty folder name between its commas")
    real = [os.path.realpath(p) for p in dirs]
    _need(len(set(real)) == len(real), f"data.dir={c.data.dir!r} names the same folder twice")
    for (a, ra), (b, rb) in itertools.permutations(zip(dirs, real), 2):  # each folder splits on its own
        _need(not _inside(ra, rb), f"data.dir={c.data.dir!r}: {a} lies inside {b}: its images would be stored twice, "
                                  f"with independent splits (validation images trained on); name each folder once")
    _need(8 <= c.data.size <= MAX_SIZE and c.data.size % 4 == 0,
         f"data.size must be a multiple of 4 in [8, {MAX_SIZE}], got {c.data.size}")
    _need(0 < c.data.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {c.data.val_fraction}")
    _need(c.data.resize_mode in RESIZE_MODES,
         f"data.resize_mode={c.data.resize_mode!r} is not one of {', '.join(map(repr, RESIZE_MODES))}")
    if c.data.resize_mode == "full":
        _need(c.data.source == "dir", "data.resize_mode='full' needs data.source='dir' (the built-in photos are crops)")
        _need(0 < c.data.patch <= c.data.size, f"data.resize_mode='full' trains on patches: data.patch must be in "
                                              f"[1, data.size={c.data.size}], got {c.data.patch}")
        _need(c.data.max_side >= c.data.size, f"data.max_side={c.data.max_side} must be >= data.size={c.data.size}")
    return dirs, real


def _check_noise_and_targets(c, dirs, real) -> None:
    """Real pairs, noisy photos alone, a validation folder apart from the training ones, fixed noise, the
    device-resident loader, and the sizes the model's stride (and neighbor2neighbor's halving) need."""
    pairs, val_dir = bool(c.data.get("pairs")), c.data.get("val_dir", "")
    _check_real_noise(c, pairs, val_dir)
    if val_dir:
        _check_val_dir(c, val_dir, dirs, real)
    if c.noise_fixed:
        _need(c.noise != "none" and not pairs, "noise_fixed=True fixes synthetic noise: with noise='none' (real "
                                              "noisy photos) the noise is already fixed")
        _need(c.data.resize_mode != "full", "noise_fixed=True needs a fixed-size store (data.resize_mode='resize' or "
                                           "'center_crop'): each image's noise is drawn once over the whole stored "
                                           "image, then cropped")
        _need(not c.data.device_resident, "noise_fixed=True needs the grain loader: set data.device_resident=False")
    _need(not (c.data.device_resident and (c.data.flips or c.data.rot90 or c.data.patch or c.data.channels)),
         "data.device_resident does not support data.flips / data.rot90 / data.patch / data.channels")
    _need(not (c.noise_fixed and c.data.channels), "data.channels does not combine with noise_fixed=True (each "
                                                   "image's noise is fixed in its stored colours)")
    _check_sizes(c)
    _need(isinstance(c.init_from, str), f"init_from must be a path string, got {c.init_from!r}")


def _check_real_noise(c, pairs: bool, val_dir: str) -> None:
    """Real noisy/clean pairs (``data.pairs``) and noisy photos alone (``noise='none'``): what each needs."""
    _need(not pairs or c.data.source == "dir", "data.pairs needs data.source='dir' (folders with clean/ and noisy/)")
    _need(not pairs or c.data.resize_mode == "full",
         f"data.pairs keeps real pairs at their own size (resizing would blur the noise): set data.resize_mode='full' "
         f"and data.patch, got data.resize_mode={c.data.resize_mode!r}")
    noisy_only = not pairs and c.noise == "none"  # data.dir holds noisy photos alone, no clean reference
    for field in ("noise", "eval_noise"):
        spec = c[field] or (c.noise if field == "eval_noise" else "")
        if pairs:
            _need(spec == "none", f"data.pairs trains on real noisy shots: set {field}='none' (got {spec!r}); synthetic "
                                 f"noise needs clean images")
        elif field == "noise" and spec == "none":
            _need(c.target == "neighbor2neighbor",
                 f"noise='none' without data.pairs trains on the noisy photos of data.dir alone: there is no clean "
                 f"image to compare with, so it needs target='neighbor2neighbor' (got target={c.target!r}); for "
                 f"real noisy/clean pairs set data.pairs")
            _need(bool(val_dir), "noise='none' trains on noisy photos alone: give data.val_dir, a folder of real pairs "
                                "(clean/ and noisy/), to validate on")
        else:
            _need(spec != "none" or bool(val_dir),
                 f"{field}='none' adds no noise: it is for data.pairs (real noisy/clean pairs) or a data.val_dir of "
                 f"real pairs")
    _need(not (c.target == "noise2noise" and c.noise == "none" and not pairs),
         "target='noise2noise' with noise='none' needs data.pairs (two noisy shots of each scene)")
    if noisy_only:
        _need(c.data.resize_mode == "full", f"noise='none': noisy photos are kept at their own size (resizing would "
                                           f"blur the noise): set data.resize_mode='full' and data.patch, got "
                                           f"data.resize_mode={c.data.resize_mode!r}")
    _need(not ((pairs or noisy_only) and models.create(c.model).in_channels != 3),
         ("data.pairs" if pairs else "noise='none'") + ": a non-blind model needs the noise level of each input, "
         "which real shots do not carry: use a blind model")


def _check_val_dir(c, val_dir: str, dirs, real) -> None:
    """A validation folder apart from every training folder (resolved paths: not equal, inside or holding)."""
    _need(c.data.source == "dir", "data.val_dir needs data.source='dir'")
    rv = os.path.realpath(val_dir)
    for d, rd in zip(dirs, real):
        _need(rv != rd, f"data.val_dir={val_dir!r} is also in data.dir: validation images must not be trained on")
        _need(not _inside(rv, rd), f"data.val_dir={val_dir!r} lies inside data.dir folder {d}: its images would "
                                  f"be trained on")
        _need(not _inside(rd, rv), f"data.val_dir={val_dir!r} holds data.dir folder {d}: its images would be "
                                  f"validated on and trained on")


def _check_sizes(c) -> None:
    """The sizes the model's stride (and neighbor2neighbor's halving) need."""
    _need(c.data.patch >= 0, f"data.patch must be >= 0 (0 = whole images), got {c.data.patch}")
    stride = models.create(c.model).stride
    for field in ("size", "patch"):
        _need(c.data[field] % stride == 0, f"data.{field}={c.data[field]} must be a multiple of {stride}, the "
                                          f"down-sampling factor of model {c.model.name!r}")
    if c.target == "neighbor2neighbor":  # the model also sees half-size sub-images
        side = c.data.patch or c.data.size
        _need(side % (2 * stride) == 0, f"target='neighbor2neighbor' trains on half-size sub-images: the training "
                                       f"side ({side}) must be a multiple of {2 * stride}, twice the stride of "
                                       f"model {c.model.name!r}")
