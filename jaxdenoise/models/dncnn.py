"""DnCNN (Zhang et al. 2017, "Beyond a Gaussian Denoiser"): a plain stack of 3x3 convs that predicts the noise.

    conv 3->W + ReLU, (depth - 2) x [conv W->W + ReLU], conv W->3;  output = noisy - predicted noise

The paper's colour model is 20 layers of width 64 (CDnCNN-B; 17 for the grey, known-sigma one); ``depth``
and ``width`` are configurable (the 17x64 default: 557,443 parameters; the small CPU variant 10x32:
75,747). No down-sampling (stride 1); receptive field ``2 * depth + 1`` pixels.

Initialisation, after the paper: He et al.'s (variance 2 / fan_in, ``layers.HE_NORMAL``) for every conv, which
keeps the signal's scale through the ReLU stack; the last conv (the noise estimate) is drawn at a tenth of that
scale, so the net starts near the identity (output = input minus a small residual) and still learns from its
first steps. Batch normalisation (the paper's, in layers 2 to depth-1) is left out: measured 2026-12-02 on the
2-core CPU, 17x64, 32x32 built-in crops, batch 8, Adam 1e-3 (10 warm-up steps), gaussian:25, validation PSNR
after 400 steps (noisy input 20.55 dB; loss at the identity 0.0085, at step 1 in brackets):

    flax default init (lecun_normal), no BN (before):  20.58 dB  (stuck at the identity; signal halves per layer)
    He, no BN:                                         26.67 dB  (step 1: 0.2255, far from the identity)
    He, no BN, last conv at 0.1 x He (this model):     26.86 dB  (step 1: 0.0110)
    He, no BN, last conv zero:                         20.59 dB  (stays at the identity)
    He + BN (the paper's design):                      20.56 dB  (step 1 worse than the identity)
    He + BN, last conv zero:                           24.48 dB

BN would also add running statistics to every path (train, resume, evaluate, tiles, the mesh) for a slower
start here. (The paper trains with SGD at lr 0.1 for 50 epochs, where BN is what makes that rate stable.)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdenoise.models.layers import Conv3x3, HE_NORMAL, LevelInput, whole

# the last conv's initialiser: He's scale times 0.1 (a small first residual; see the module docstring)
LAST_INIT = nn.initializers.variance_scaling(2.0 * 0.1 ** 2, "fan_in", "truncated_normal")


class DnCNN(LevelInput, nn.Module):
    """``float [B, H, W, 3]`` in [0, 1] -> ``float32 [B, H, W, 3]`` (noisy minus predicted noise); any H, W."""
    depth: int = 17
    width: int = 64
    noise_level: bool = False  # FFDNet-style: a noise-level map as a 4th input channel
    dtype: Any = jnp.float32
    # the step's time is in Conv3x3 / ConvTranspose2x layers: with oneDNN's convolutions the CPU step runs the
    # whole batch at once (steps.micro_batch_chunks), not in cache-sized micro-batches
    conv_bound = True
    stride = 1  # no down-sampling; not a field

    @property
    def receptive_field(self) -> int:
        return 2 * self.depth + 1

    @staticmethod
    def check(fields) -> None:
        if not whole(fields.get("depth", 17), 2):
            raise ValueError(f"model.depth must be >= 2, got {fields.get('depth')}")
        if not whole(fields.get("width", 64), 1):
            raise ValueError(f"model.width must be >= 1, got {fields.get('width')}")

    @nn.compact
    def __call__(self, x):
        noisy = x[..., :3].astype(jnp.float32)
        h = x.astype(self.dtype)
        for i in range(self.depth - 1):
            h = nn.relu(Conv3x3(self.width, kernel_init=HE_NORMAL, dtype=self.dtype, name=f"conv{i}")(h))
        noise = Conv3x3(3, kernel_init=LAST_INIT, dtype=self.dtype, name=f"conv{self.depth - 1}")(h)
        return noisy - noise.astype(jnp.float32)
