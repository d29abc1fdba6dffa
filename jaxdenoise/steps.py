"""Train and eval steps and the train state: pure functions, no I/O. Compiled by ``train.py`` / ``benchmark.py``.

The hot path: ``uint8 [B, H, W, 3]`` clean batch -> float [0, 1] on device -> noise from
``fold_in(rng, step)`` -> model -> loss (``losses``: MSE by default) against the target (``targets``: the clean
image by default) -> optax update. Metrics come back as device scalars; the caller
decides when to fetch them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdenoise import losses, metrics as M, noise as noise_lib, targets
from jaxdenoise.fusion import materialise
from jaxdenoise.noise import NoiseModel

Metrics = Dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (checkpointed whole). ``step`` is an int32 scalar."""
    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any = None  # exponential moving average of params (config.ema_decay > 0), else None (not saved)


def eval_params(state: TrainState):
    """The weights a run is judged and shipped by: the EMA when the run keeps one, else the parameters."""
    return state.params if state.ema is None else state.ema


OPTIMIZERS = ("adam", "adamw", "sgd")  # config.optimizer's choices (config.validate reads them here)
SCHEDULES = ("constant", "cosine")      # config.schedule's


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """optax optimiser from the config: adam | adamw | sgd (momentum), lr with optional warmup + cosine, clipping.

    Reads ``optimizer``, ``learning_rate``, ``momentum`` (sgd), ``b1``, ``b2`` (adam, adamw),
    ``weight_decay`` (adamw: decoupled, scaled by the schedule as in optax and PyTorch), ``schedule``
    ('constant' | 'cosine' to 0 at ``total_steps``), ``warmup_steps``, ``grad_clip`` (global norm; 0 = off).
    A config.json written before b1 / b2 / weight_decay existed reads as adam's defaults.
    """
    lr = config.learning_rate
    if config.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                                max(total_steps, config.warmup_steps + 1))
    elif config.schedule == "constant":
        if config.warmup_steps > 0:
            lr = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}: use 'constant' or 'cosine'")
    b1, b2 = config.get("b1", 0.9), config.get("b2", 0.999)
    if config.optimizer == "adam":
        tx = optax.adam(lr, b1=b1, b2=b2)
    elif config.optimizer == "adamw":
        tx = optax.adamw(lr, b1=b1, b2=b2, weight_decay=config.get("weight_decay", 0.0))
    elif config.optimizer == "sgd":
        tx = optax.sgd(lr, momentum=config.momentum or None)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}: use 'adam', 'adamw' or 'sgd'")
    if config.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape: Tuple[int, int, int], ema: bool = False) -> TrainState:
    """Fresh state; ``image_shape`` is (H, W, 3); ``ema``: keep an EMA of the parameters (starts equal to
    them). Pure: usable under ``jax.eval_shape`` for restores."""
    h, w = tuple(image_shape)[:2]
    params = model.init(rng, jnp.zeros((1, h, w, model.in_channels), jnp.float32))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema=jax.tree.map(jnp.copy, params) if ema else None)


def ema_update(ema, params, step: jax.Array, decay: float):
    """``ema <- d ema + (1 - d) params`` with ``d = min(decay, (1 + step) / (10 + step))``: the warm-up keeps
    the average from dragging the random initialisation through the first thousands of steps (as timm's
    and NAFNet's EMA do)."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    return jax.tree.map(lambda e, p: e * d + p * (1.0 - d), ema, params)


def model_input(model: nn.Module, noisy: jax.Array, level: jax.Array) -> jax.Array:
    """What ``model`` takes: ``noisy`` (``[B, H, W, 3]``), with the noise-level map ``level``
    (``[B, H, W, 1]``) appended as a 4th channel when the model is non-blind (``model.in_channels == 4``)."""
    if model.in_channels == 3:
        return noisy
    return jnp.concatenate([noisy, level.astype(noisy.dtype)], axis=-1)


def to_float(batch: jax.Array) -> jax.Array:
    """``uint8 [..]`` in 0..255 -> ``float32`` in [0, 1] (on device: host traffic stays uint8)."""
    return batch.astype(jnp.float32) * (1.0 / 255.0)


def split_pairs(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """(clean, what the noise model noises) of a float batch ``[B, H, W, C]``: a batch of real pairs
    (C = 6, a ``data.pairs`` store: clean RGB then the real noisy shot) gives its two halves (with noise
    ``none`` the shot is the model's input); clean images (C = 3) give themselves twice."""
    if x.shape[-1] == 6:
        return x[..., :3], x[..., 3:]
    return x, x


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """How ``train_step`` trains (static: bound once by ``bind``, never passed per call; the fields are
    ``train_step``'s docstring's)."""
    chunks: int = 1
    ema_decay: float = 0.0
    loss: str = "mse"
    target: str = "clean"
    total_steps: int = 0
    gamma: float = targets.N2N_GAMMA
    patch: int = 0
    alpha: float = targets.R2R_ALPHA


# Over 60 lines: one traced computation (noise, target, forward, loss, gradient, update, EMA) read in order.
def train_step(state: TrainState, batch: jax.Array, rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, noise: NoiseModel, settings: StepSettings = StepSettings()
               ) -> Tuple[TrainState, Metrics]:
    """One optimisation step. batch: ``uint8 [B, H, W, 3]`` (or ``[B, H, W, 6]`` real pairs: ``split_pairs``),
    or a fixed-noise batch (a dict of whole images and their meta: ``fixed_noisy``, cropped to ``patch``);
    rng: the run's key (noise uses fold_in(rng, step), fixed noise fold_in(rng, image index)).

    chunks: the gradient is summed over this many equal micro-batches of the (already noised) batch, one
    after another: the same loss and gradient as the whole batch (up to float rounding), with activations
    small enough to stay in the CPU's caches (``micro_batch_chunks``). Image ``i`` of the chunk ``c`` is batch
    row ``i * chunks + c``, so with the batch sharded over devices in contiguous blocks every chunk stays
    spread evenly over the devices (no data movement) when ``chunks`` divides the per-device batch.

    ema_decay: with ``state.ema`` kept, its decay (``ema_update``). loss: a name in ``losses.LOSSES``.
    target: what the output is compared with (``targets.TARGETS``: clean | noise2noise | neighbor2neighbor |
    recorrupted);
    total_steps and gamma: neighbor2neighbor's regulariser weight, ramped from 0 to gamma over total_steps.
    alpha: the recorrupted target's share (``targets.recorrupted``).

    Returns the new state and scalar metrics: loss (the configured loss, mean over images), psnr (denoised
    vs clean, mean over images; neighbor2neighbor at gamma 0: of its half-size sub-images, ``targets.loss_fn``),
    noisy_psnr (input vs clean), grad_norm. The settings below are ``settings``' fields.
    """
    chunks, target, patch, alpha = settings.chunks, settings.target, settings.patch, settings.alpha
    per_image_loss = losses.get(settings.loss)
    key = jax.random.fold_in(rng, state.step)
    if isinstance(batch, dict):  # noise_fixed: each image's noise drawn from its index, then cropped and turned
        parts = fixed_noisy(noise, rng, batch, patch, second=target == "noise2noise",
                            parameters=target == "recorrupted")
        clean, noisy, level = parts["clean"], parts["noisy"], parts["level"]
        reference, drawn = parts.get("second", clean), parts.get("parameters")
    else:
        clean, source = split_pairs(to_float(batch))
        noisy, level = noise.sample(key, source)
        reference, drawn = clean, noise.parameters(key, source.shape[0]) if target == "recorrupted" else None
        if target == "noise2noise":  # the second draw (or the other shot) is the target; clean stays the metric's
            noisy, reference = targets.second_draw(jax.random.fold_in(key, 1), noise, clean, source, noisy)
    if target == "recorrupted":  # a fresh split of the one noisy shot every step; its input is noisier
        noisy, reference = targets.recorrupted(jax.random.fold_in(key, 1), noise, noisy, drawn, alpha)
        level = level / jnp.sqrt(1.0 - alpha)  # noise variance / (1 - alpha): Gaussian and shot noise alike
    progress = state.step.astype(jnp.float32) / max(settings.total_steps, 1)
    objective = targets.loss_fn(target, per_image_loss, lambda p, x, lv: model.apply(
        {"params": p}, model_input(model, x, lv)), settings.gamma)

    def loss_fn(params, noisy, level, reference, k, clean):
        value, out = objective(params, noisy, level, reference, k, progress, clean)
        return value / chunks, out

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    # the level map matters to non-blind models only (a blind model's copy would be dead weight below)
    heavy = {"noisy": noisy}
    if model.in_channels != 3:
        heavy["level"] = level
    if target in ("noise2noise", "recorrupted"):
        heavy["reference"] = reference
    if chunks > 1:
        # Materialise the noisy batch once. Left alone, XLA fuses the noise model's elementwise chain into
        # each of its 2 x chunks consumers (every chunk's slice and E1's kernel-gradient transpose) and runs
        # it 17 times over, de-vectorised along the 3 channels: poisson:30 then cost ~55 ms of a ~230 ms CPU
        # step instead of ~16 ms. A conditional is a fusion boundary (optimization_barrier is not, on CPU);
        # its predicate is always true, but XLA cannot know that from the step counter.
        heavy = materialise(heavy, state.step >= 0)
    noisy, level, reference = heavy["noisy"], heavy.get("level", level), heavy.get("reference", reference)
    split = lambda x: x.reshape((x.shape[0] // chunks, chunks) + x.shape[1:])
    noisy_c, level_c, reference_c, clean_c = split(noisy), split(level), split(reference), split(clean)
    loss, grads, psnr = 0.0, None, 0.0
    # A Python loop, not lax.scan: XLA's CPU backend runs convolutions inside a while loop ~8x slower.
    for c in range(chunks):
        (l, (out, view)), g = grad_fn(state.params, noisy_c[:, c], level_c[:, c], reference_c[:, c],
                                      jax.random.fold_in(jax.random.fold_in(key, 2), c), clean_c[:, c])
        loss = loss + l
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        psnr = psnr + jnp.mean(M.psnr_per_image(jax.lax.stop_gradient(out), view)) / chunks
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "psnr": psnr,
        "noisy_psnr": jnp.mean(M.psnr_per_image(noisy, clean)),
        "grad_norm": optax.tree.norm(grads),
    }
    ema = None if state.ema is None else ema_update(state.ema, params, state.step, settings.ema_decay)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema), metrics


# Pixels per device per micro-batch when ``micro_batch = 0`` on CPU: one 64x64 patch, so any image of 64x64
# or more goes one per chunk. The chunk's activations must stay in the core's own cache. Measured
# 2026-12-06 on CPU-2 as an Intel Xeon (2 MiB L2 per core), configs/unet_photos.py (U-Net, 64x64 patches,
# batch 8), img/s of the step: 8-image chunks 19.5, 4 26.8, 2 30.0, 1 **34.4**; photos.py:dncnn at batch
# 16: 8-image chunks 3.8, 1 10.3; unet_faces (64x64 patches): 2 and 1 both 37.7. On CPU-2 as an AMD EPYC
# (32 MiB L3, 2026-11-27), paper model at 128x128, batch 16, ms per step: 8 images 279-285, 4 232-235, 2
# 222-252, 1 218-227. The old budget (2 x 128^2 px: eight 64x64 patches) was right there and 1.8x slow here.
CPU_MICRO_BATCH_PIXELS = 64 * 64


def micro_batch_chunks(micro_batch: int, per_device_batch: int, image_side: int, platform: str,
                       whole_batch: bool = False) -> int:
    """The ``chunks`` argument of ``train_step`` for config ``micro_batch`` (images per device per chunk).

    ``micro_batch = 0`` picks: on GPU/TPU, and on CPU with ``whole_batch`` (a conv-bound model whose
    convolutions run through oneDNN, ``parallel.jit_train_step``), the whole batch; otherwise on CPU the
    largest divisor of the per-device batch whose chunk holds at most ``CPU_MICRO_BATCH_PIXELS``. oneDNN's
    convolutions use every core within one call and reach their best rate on the whole batch (the U-Net at
    batch 8 of 64x64: 1.28x the img/s of one-patch chunks, docs/benchmarks.md); XLA's run one chunk per core
    and need the chunk to stay in the core's cache.
    Raises ValueError when an explicit ``micro_batch`` does not divide the per-device batch
    (``config.validate`` has already rejected negative values).
    """
    if micro_batch == 0:
        if platform != "cpu" or whole_batch:
            return 1
        fits = [m for m in range(1, per_device_batch + 1)
                if per_device_batch % m == 0 and m * image_side * image_side <= CPU_MICRO_BATCH_PIXELS]
        return per_device_batch // max(fits or [1])
    if per_device_batch % micro_batch:
        raise ValueError(f"config: micro_batch={micro_batch} must divide the per-device batch ({per_device_batch})")
    return per_device_batch // micro_batch


def multi_train_step(state: TrainState, batches: jax.Array, rng: jax.Array, *, unroll: bool = False,
                     **kw) -> Tuple[TrainState, Metrics]:
    """k train steps in one call: batches ``uint8 [k, B, H, W, 3]`` -> metrics stacked ``[k]``.

    A ``lax.scan`` over ``train_step``: the same parameters as k separate calls (same step-indexed noise),
    one dispatch instead of k (small batches on a GPU are launch-bound otherwise). unroll: unroll the scan
    fully; XLA's CPU backend runs convolutions inside a while loop ~8x slower (measured: 3.3 s vs 0.4 s per
    step of the paper model), so ``parallel.jit_train_step`` unrolls on CPU.
    """
    def body(s, b):
        return train_step(s, b, rng, **kw)
    return jax.lax.scan(body, state, batches, unroll=batches.shape[0] if unroll else 1)


def image_keys(rng: jax.Array, index: jax.Array) -> jax.Array:
    """The noise key of each image ``fold_in(rng, index)``: ``[B]`` keys for ``int32 [B]`` indices."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def eval_noisy(noise: NoiseModel, rng: jax.Array, clean: jax.Array, index: jax.Array,
               frame: Optional[noise_lib.Frame] = None) -> Tuple[jax.Array, jax.Array]:
    """(noisy images, noise-level maps ``[B, H, W, 1]``) with noise keyed by each image's index in its split:
    ``fold_in(rng, index)``.

    The same image gets the same noise whatever the batch size or padding, every epoch.
    clean: ``float [B, H, W, 3]`` (or 6-channel real pairs: the noisy half is returned as it is, ``split_pairs``);
    index: ``int32 [B]``. frame: ``(origin int [B, 2], (H_full, W_full))`` when ``clean`` holds crops of larger
    images: each crop gets the noise its whole image would get there (pixelwise noise models only,
    ``NoiseModel.sample``).
    """
    clean = split_pairs(clean)[1]
    keys = image_keys(rng, index)
    if frame is None:
        noisy, level = jax.vmap(lambda k, x: noise.sample(k, x[None]))(keys, clean)
    else:
        origin, size = frame
        noisy, level = jax.vmap(lambda k, x, o: noise.sample(k, x[None], (o[None], size)))(keys, clean, origin)
    return noisy[:, 0], level[:, 0]


FIXED_NOISE_SALT = 0xF12ED  # fixed training noise: its own stream, apart from the step-keyed one


def crop(x: jax.Array, meta: jax.Array, patch: int) -> jax.Array:
    """The ``patch`` x ``patch`` crop of each image of ``x`` (``[B, H, W, C]``, any dtype) at its ``meta`` row's
    (y, x) (``loader.META_FIELDS``; ``int32 [B, 6]``); ``patch`` 0: the whole images."""
    if not patch:
        return x
    return jax.vmap(lambda img, m: jax.lax.dynamic_slice(img, (m[1], m[2], 0), (patch, patch, img.shape[-1])))(x, meta)


def turn(x: jax.Array, meta: jax.Array) -> jax.Array:
    """Flip and turn each image of ``x`` (``[B, h, w, C]``) as its ``meta`` row says: hflip, vflip, then ``rot``
    quarter turns, in ``loader.augment``'s order (turns need square images; a non-square batch has rot 0)."""
    def one(img, m):
        img = jnp.where(m[3] > 0, img[:, ::-1], img)
        img = jnp.where(m[4] > 0, img[::-1], img)
        if img.shape[0] == img.shape[1]:  # rot90 is refused on non-square whole images (rot is then 0)
            img = jax.lax.switch(m[5], [functools.partial(jnp.rot90, k=j) for j in range(4)], img)
        return img
    return jax.vmap(one)(x, meta)


def fixed_noisy(noise: NoiseModel, rng: jax.Array, batch: Dict[str, jax.Array], patch: int,
                second: bool = False, parameters: bool = False) -> Dict[str, jax.Array]:
    """The fixed-noise setting (``config.noise_fixed``): each training image's noise is drawn once, over the
    whole stored image, keyed by the image's index (``fold_in(fold_in(rng, FIXED_NOISE_SALT), index)``), so
    the same image is the same noisy image in every epoch and after a resume, as a real noisy dataset would
    be; a crop is a window of that one noisy image, then turned (``turn``).

    A pixelwise noise model (``NoiseModel.pixelwise``) noises the crop alone, with the variates its whole image
    draws there (``eval_noisy``'s ``frame``): the same noisy pixels, the costly part of the noise (shot noise's
    inversion) on a quarter of the pixels for 64x64 crops of 128x128 faces. Other models (camera noise, JPEG)
    noise the whole image, which is then cropped. Measured on CPU-2 (16 faces, the faces' Gaussian / shot
    mixture): ~300 ms for this function when it noised whole images and XLA fused the noise into each
    consumer, ~37 ms now; the train step 483-497 -> 178-187 ms (docs/benchmarks.md).

    batch: ``{"image": uint8 [B, H, W, 3], "meta": int32 [B, 6]}`` (``loader`` with ``fixed=True``).
    second: also a second fixed draw (``fold_in(key, 1)``), noise2noise's target: two noisy shots per image.
    parameters: also what each image's noise drew (``NoiseModel.parameters``: shot peak and Gaussian sigma,
    ``[B]`` each), the recorrupted target's split.
    Returns float32 ``clean``, ``noisy`` ``[B, p, p, 3]`` in [0, 1] (unclipped specs may leave it), ``level``
    ``[B, p, p, 1]``, with ``second`` ``second`` (p = patch, or H for whole images), and with ``parameters``
    ``parameters``.
    """
    x, meta = to_float(batch["image"]), batch["meta"]
    key = jax.random.fold_in(rng, FIXED_NOISE_SALT)
    index = meta[:, 0]
    if patch and noise.pixelwise:
        clean = crop(x, meta, patch)
        frame = (meta[:, 1:3], x.shape[1:3])
        draw = lambda k: eval_noisy(noise, k, clean, index, frame)
    else:
        clean = x
        draw = lambda k: eval_noisy(noise, k, x, index)
    noisy, level = draw(key)
    parts = {"clean": clean, "noisy": noisy, "level": level}
    if second:
        parts["second"] = draw(jax.random.fold_in(key, 1))[0]
    # materialise the noisy images once: left alone XLA fuses the noise model's chain into every consumer,
    # each of turn's four quarter-turn branches included (an image index is never negative)
    parts = materialise(parts, index[0] >= 0)
    if patch and not noise.pixelwise:
        parts = {name: crop(v, meta, patch) for name, v in parts.items()}
    parts = {name: turn(v, meta) for name, v in parts.items()}
    if parameters:
        peak, sigma = jax.vmap(lambda k: noise.parameters(k, 1))(image_keys(key, index))
        parts["parameters"] = (peak[:, 0], sigma[:, 0])
    return parts


def eval_step(params, batch: jax.Array, index: jax.Array, rng: jax.Array, *, model: nn.Module,
              noise: NoiseModel) -> Metrics:
    """Per-image metrics ``[B]`` for a (possibly padded) batch: the caller drops padded rows.

    batch: ``uint8 [B, H, W, 3]``; index: ``int32 [B]`` positions in the split (sets the noise).
    Returns psnr, ssim, mse (denoised vs clean) and noisy_psnr, noisy_ssim.
    """
    x = to_float(batch)
    clean = split_pairs(x)[0]
    noisy, level = eval_noisy(noise, rng, x, index)
    out = jnp.clip(model.apply({"params": params}, model_input(model, noisy, level)), 0.0, 1.0)  # as inference does (denoise.make_apply)
    mse = M.mse_per_image(out, clean)
    return {
        "psnr": M.psnr_from_mse(mse),
        "mse": mse,
        "ssim": M.ssim_per_image(out, clean),
        "noisy_psnr": M.psnr_per_image(noisy, clean),
        "noisy_ssim": M.ssim_per_image(noisy, clean),
    }


_STEP_ARGS = ("model", "tx", "noise", "unroll")  # train_step's and multi_train_step's own keywords


def bind(fn: Callable, **static) -> Callable:
    """``fn`` with its keyword-only (static) arguments fixed, ready for ``jax.jit``. For ``train_step`` and
    ``multi_train_step`` the ``StepSettings`` fields may be given by name (``chunks=2, loss="l1"``): they are
    gathered into its ``settings``."""
    if fn in (train_step, multi_train_step):
        fields = {k: v for k, v in static.items() if k not in _STEP_ARGS}
        static = {k: v for k, v in static.items() if k in _STEP_ARGS}
        if fields:
            static["settings"] = StepSettings(**fields)
    return functools.partial(fn, **static)
