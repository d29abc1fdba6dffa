"""Validation during training: the whole validation split scored with fixed noise, sharded over every device
of every process; and the image grid of clean | noisy | denoised."""
from __future__ import annotations

import collections
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from jaxdenoise import noise as noise_lib, parallel, plots, steps


class Evaluator:
    """Whole validation split, fixed noise (``fold_in(eval_seed, image index)``), padded last batch.

    Each evaluation batch of ``batch_size`` rows (rounded up to a multiple of the global device count) is
    split over the mesh's ``data`` axis; each process reads and feeds only its own rows
    (``parallel.local_rows``), and the per-image metrics come back replicated, so every image is scored
    once and every process gets the same means as a single process would. One compilation: padded rows
    repeat the last image and are dropped on the host. ``__call__(params)`` returns mean psnr, ssim, mse,
    noisy_psnr, noisy_ssim.

    images: ``uint8 [N, H, W, 3]`` (every process opens the whole split; it reads only its rows).
    """

    def __init__(self, images: np.ndarray, model, noise: noise_lib.NoiseModel, batch_size: int, seed: int,
                 mesh: jax.sharding.Mesh, num_grid: int):
        self.images = images
        n_dev = mesh.devices.size
        self.batch_size = -(-batch_size // n_dev) * n_dev  # a multiple of the device count
        self.rng = jax.random.PRNGKey(seed)
        repl, rows = parallel.replicated(mesh), parallel.rows(mesh)
        self.rows, self.repl = rows, repl
        self.step = jax.jit(steps.bind(steps.eval_step, model=model, noise=noise),
                            in_shardings=(repl, rows, rows, repl), out_shardings=repl)
        g = min(num_grid, images.shape[0])
        self.grid_source = np.asarray(images[:g])  # 6 channels for real pairs: the clean half is shown
        self.grid_clean = self.grid_source[..., :3]

        def grid_fn(params, clean_u8):
            clean = steps.to_float(clean_u8)
            noisy, level = steps.eval_noisy(noise, self.rng, clean, jnp.arange(clean.shape[0]))
            return noisy, model.apply({"params": params}, steps.model_input(model, noisy, level))
        # replicated in and out: every process runs the (small) grid and can read it
        self.grid_fn = jax.jit(grid_fn, in_shardings=(repl, repl), out_shardings=repl)

    def __call__(self, params) -> Dict[str, float]:
        n, bs = self.images.shape[0], self.batch_size
        mine = parallel.local_rows(bs)
        sums: Dict[str, float] = collections.defaultdict(float)
        for start in range(0, n, bs):
            idx = np.arange(start, start + bs)[mine]
            valid = int(min(bs, n - start))
            src = np.minimum(idx, n - 1)
            batch = jax.make_array_from_process_local_data(self.rows, np.asarray(self.images[src]))
            index = jax.make_array_from_process_local_data(self.rows, idx.astype(np.int32))
            out = jax.device_get(self.step(params, batch, index, self.rng))
            for k, v in out.items():
                sums[k] += float(np.sum(v[:valid], dtype=np.float64))
        return {k: v / n for k, v in sums.items()}

    def grid(self, params) -> np.ndarray:
        """``uint8`` grid: rows of clean | noisy | denoised validation images."""
        clean = jax.make_array_from_process_local_data(self.repl, self.grid_source)
        noisy, out = jax.device_get(self.grid_fn(params, clean))
        return plots.image_grid([self.grid_clean, noisy, out], labels=["clean", "noisy", "denoised"])


def scores(evaluator: Evaluator, state: steps.TrainState) -> Dict[str, float]:
    """Validation metrics of ``steps.eval_params(state)``; with an EMA also ``raw_psnr`` of the raw parameters."""
    res = evaluator(steps.eval_params(state))
    if state.ema is not None:
        res["raw_psnr"] = evaluator(state.params)["psnr"]
    return res
