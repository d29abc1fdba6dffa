"""Training targets: what the model's output is compared with. Pure JAX functions, no I/O.

``config.target`` names one:

- ``clean``: the clean image (supervised training; the default).
- ``noise2noise``: a second, independent noisy draw of the same image (Lehtinen et al. 2018): with
  zero-mean noise the expected loss differs from the clean-target loss by a constant, so the minimiser is
  the same. Synthetic noise draws the second copy with its own key; a ``data.pairs`` store of two noisy
  shots of one scene (``clean/`` and ``noisy/`` each a shot) uses the other shot, swapping the two at
  random per image so that both serve as input.
- ``neighbor2neighbor``: one noisy image only (Huang et al., CVPR 2021): a random neighbour sub-sampler
  splits it into two half-size images ``g1(y)``, ``g2(y)`` (in each 2x2 cell one pixel for each, the two
  adjacent), and the loss is ``|f(g1(y)) - g2(y)|^2 + gamma_t |f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))|^2``
  with ``f(y)`` held constant (no gradient; their ``torch.no_grad``) and ``gamma_t`` rising linearly from 0 to
  ``gamma`` over the run (their ``Lambda = epoch / n_epoch * increase_ratio``, increase_ratio 2).

- ``recorrupted``: one noisy image and its noise model (Generalised Recorrupted-to-Recorrupted: Pang et al.,
  CVPR 2021; Monroy, Bacca & Tachella 2025): each step splits the noisy image, with fresh randomness, into two
  independent unbiased noisy copies (``NoiseModel.recorrupt``: Gaussian noise by adding and subtracting one
  draw, shot noise by binomial thinning of its counts), the input and the target. Noise2Noise from a single
  shot, for noise whose model is known (Gaussian of known sigma, photon counts of known gain, unclipped);
  ``target_alpha`` is the target's share (R2R's alpha 0.5 is 0.2 here; default 0.1). The model learns a
  denoiser for noise ``1 / (1 - alpha)`` times the variance, and is applied to the noisy image itself.

Each target gives, for a micro-batch, the loss and the denoised output (with the clean pixels it stands for)
used for the training PSNR metric; the train step (``steps.train_step``) stays one jitted function.
"""
from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from jaxdenoise import losses

TARGETS = ("clean", "noise2noise", "neighbor2neighbor", "recorrupted")
# the target's share: input noise variance x1 / (1 - alpha), target's x1 / alpha. R2R's a = 0.5 is alpha 0.2; 0.1
# measured better on faces at 1,000 steps (+0.15 / +0.06 dB), and both apply the model to the noisy image
# itself better than R2R's average over recorrupted inputs (docs/quality.md)
R2R_ALPHA = 0.1
N2N_GAMMA = 2.0  # Huang et al.'s increase_ratio (their Gaussian and Poisson settings)

# Neighbour pairs inside a 2x2 cell, cell pixels numbered 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1): the eight
# ordered pairs of horizontally or vertically adjacent pixels (Huang et al.'s ``generate_mask_pair``).
NEIGHBOUR_PAIRS = ((0, 1), (0, 2), (1, 3), (3, 2), (1, 0), (2, 0), (3, 1), (2, 3))


def check(name: str) -> str:
    """``name`` if it is a target; a one-line ValueError naming the choices otherwise."""
    if name not in TARGETS:
        raise ValueError(f"target={name!r} is not one of {', '.join(TARGETS)}")
    return name


def neighbour_positions(key: jax.Array, batch: int, h: int, w: int) -> Tuple[jax.Array, jax.Array]:
    """Two ``int32 [B, H/2, W/2]`` maps of cell positions (0-3): for each 2x2 cell of an ``H x W`` image one
    of the eight neighbour pairs, drawn uniformly; the two positions of a cell always differ and are adjacent."""
    if h % 2 or w % 2:
        raise ValueError(f"neighbor2neighbor needs even image sides, got {h}x{w}")
    pairs = jnp.asarray(NEIGHBOUR_PAIRS, jnp.int32)
    choice = jax.random.randint(key, (batch, h // 2, w // 2), 0, len(NEIGHBOUR_PAIRS))
    return pairs[choice, 0], pairs[choice, 1]


def subsample(x: jax.Array, positions: jax.Array) -> jax.Array:
    """``x`` ``[B, H, W, C]`` -> ``[B, H/2, W/2, C]``: in each 2x2 cell the pixel at ``positions`` (``[B, H/2,
    W/2]``, 0-3 in row-major cell order), every channel from the same pixel."""
    b, h, w, c = x.shape
    cells = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)
    return jnp.take_along_axis(cells, positions[..., None, None], axis=3)[..., 0, :]


def second_draw(key: jax.Array, noise, clean: jax.Array, source: jax.Array, noisy: jax.Array
                ) -> Tuple[jax.Array, jax.Array]:
    """Noise2Noise's (input, target) for a batch: synthetic noise gives the target an
    independent draw of ``noise`` on ``source``; a pairs store (noise ``none``: ``clean`` and ``noisy`` are
    two real shots) swaps the two shots per image at random. Returns (input, target) ``[B, H, W, 3]``."""
    if noise.kind == "none":
        swap = jax.random.bernoulli(key, 0.5, (clean.shape[0], 1, 1, 1))
        return jnp.where(swap, clean, noisy), jnp.where(swap, noisy, clean)
    target, _ = noise.sample(key, source)
    return noisy, target


def recorrupted(key: jax.Array, noise, noisy: jax.Array, parameters: Tuple[jax.Array, jax.Array],
                alpha: float = R2R_ALPHA) -> Tuple[jax.Array, jax.Array]:
    """The recorrupted target's (input, target) ``[B, H, W, 3]`` for a noisy batch drawn by ``noise`` with
    ``parameters`` (``NoiseModel.parameters``: each image's shot-noise peak and Gaussian sigma); ``key``: fresh
    every step, so each step sees another split of the same noisy shot."""
    return noise.recorrupt(key, noisy, *parameters, alpha)


def loss_fn(name: str, per_image_loss: Callable, forward: Callable, gamma: float = N2N_GAMMA
            ) -> Callable:
    """``f(params, inputs, level, target, key, progress, clean) -> (mean loss, (output, clean view))`` for one
    micro-batch.

    forward(params, noisy, level) -> denoised, ``[B, h, w, 3]`` at any even size; inputs: the noisy batch;
    level: its noise-level map ``[B, H, W, 1]``; target: the clean batch (``clean``), the second draw
    (``noise2noise``) or the recorrupted copy (``recorrupted``; unused by ``neighbor2neighbor``); key: the
    sub-sampler's (``neighbor2neighbor``); progress: step / total steps in [0, 1] (``gamma``'s ramp); clean:
    the clean batch, which only the training PSNR metric reads. The output returned is the denoised input and
    the clean view its pixels: neighbor2neighbor without the regulariser (``gamma`` 0) never runs the model
    on the full-size input (the regulariser's only use of it, and over half the step's model arithmetic), so
    its output is the denoised sub-image ``f(g1(y))`` and the view ``g1(clean)``."""
    check(name)

    if name != "neighbor2neighbor":
        def f(params, inputs, level, target, key, progress, clean):
            out = forward(params, inputs, level)
            return jnp.mean(per_image_loss(out, target)), (out, clean)
        return f

    def f(params, inputs, level, target, key, progress, clean):
        b, h, w, _ = inputs.shape
        p1, p2 = neighbour_positions(key, b, h, w)
        g1, g2 = subsample(inputs, p1), subsample(inputs, p2)
        out1 = forward(params, g1, subsample(level, p1))
        reconstruction = per_image_loss(out1, g2)
        if not gamma:
            return jnp.mean(reconstruction), (out1, subsample(clean, p1))
        full = jax.lax.stop_gradient(forward(params, inputs, level))
        diff = out1 - g2
        regulariser = losses.mse(diff, subsample(full, p1) - subsample(full, p2))
        gamma_t = gamma * jnp.clip(progress, 0.0, 1.0)
        return jnp.mean(reconstruction + gamma_t * regulariser), (full, clean)
    return f
