"""DnCNN (Zhang et al. 2017, "Beyond a Gaussian Denoiser"): a plain stack of 3x3 convs that predicts the noise.

    conv 3->W + ReLU, (depth - 2) x [conv W->W + ReLU], conv W->3;  output = noisy - predicted noise

The paper's colour model is 20 layers of width 64 (CDnCNN-B; 17 for the grey, known-sigma one); ``depth``
and ``width`` are configurable (the 17x64 default: 557,443 parameters; the small CPU variant 10x32:
75,747). Batch normalisation is left out: with residual learning and Adam it trains without it here, and it
would add running statistics to every path (train, resume, evaluate, tiles) for no measured gain.
No down-sampling (stride 1); receptive field ``2 * depth + 1`` pixels.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdenoise.models.layers import Conv3x3, whole


class DnCNN(nn.Module):
    """``float [B, H, W, 3]`` in [0, 1] -> ``float32 [B, H, W, 3]`` (noisy minus predicted noise); any H, W."""
    depth: int = 17
    width: int = 64
    noise_level: bool = False  # FFDNet-style: a noise-level map as a 4th input channel
    dtype: Any = jnp.float32
    stride = 1  # no down-sampling; not a field

    @property
    def in_channels(self) -> int:
        """3 (blind), or 4 with ``noise_level``: the image and its noise-level map (``noise.level_map``)."""
        return 4 if self.noise_level else 3

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
            h = nn.relu(Conv3x3(self.width, dtype=self.dtype, name=f"conv{i}")(h))
        noise = Conv3x3(3, dtype=self.dtype, name=f"conv{self.depth - 1}")(h).astype(jnp.float32)
        return noisy - noise
