"""The paper's convolutional autoencoder, in one fixed, faithful reading of its ambiguous text.

The paper says "3x3x3 latent" and "8 encoder / 7 decoder layers"; we read it as the table below, the same
table as the PyTorch reference (``shared/peers/torch_paper_ae.py``), so that numbers compare side by side.
Every conv is 3x3 'same'; every transposed conv is 3x3, stride 2 (output side doubled); NHWC:

    layer | op                              | output (128x128 input)
    E1    | conv 3->64 + ReLU               | 128x128x64
    E2    | max-pool 2x2                    | 64x64x64
    E3    | conv 64->32 + ReLU              | 64x64x32
    E4    | max-pool 2x2                    | 32x32x32
    E5    | conv 32->3 + ReLU               | 32x32x3   latent: "3x3 kernel, 3 channels"
    D1    | conv 3->32 + Sigmoid            | 32x32x32  "up to 32x32 with Sigmoid"
    D2    | transposed conv 32->32 + ReLU   | 64x64x32
    D3    | transposed conv 32->64 + ReLU   | 128x128x64
    D4    | conv 64->3 + Sigmoid            | 128x128x3 in [0, 1]

Interpretations: "3x3x3 latent" = 3x3 kernels producing a 3-channel latent (a literal 3x3 spatial latent
could not restore faces); the "8 encoder layers" count convs, activations and pools (E1-E5 with their
ReLUs); the decoder's first Sigmoid is kept because the text names it. 51,494 parameters with the default
widths (64, 32) and latent 3. Input sides must be multiples of 4 (two 2x pools).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdenoise.models.layers import Conv3x3, ConvTranspose2x, max_pool_2x2, whole


class PaperAutoencoder(nn.Module):
    """``float [B, H, W, 3]`` in [0, 1] -> ``float [B, H, W, 3]`` in [0, 1]; H, W multiples of 4.

    widths: channels of the two encoder convs (E1, E3), mirrored by the decoder (D3, D2/D1).
    latent: channels of the bottleneck (E5). dtype: activation/compute dtype (e.g. bfloat16); parameters
    stay float32 (param_dtype) and the output is float32.
    """
    widths: Sequence[int] = (64, 32)
    latent: int = 3
    dtype: Any = jnp.float32
    # the step's time is in Conv3x3 / ConvTranspose2x layers: with oneDNN's convolutions the CPU step runs the
    # whole batch at once (steps.micro_batch_chunks), not in cache-sized micro-batches
    conv_bound = True
    stride = 4  # input sides must be multiples of this (two 2x2 pools); not a field
    in_channels = 3  # blind: the image only
    receptive_field = 40  # E1..E5 and D1..D4: 3x3 convs at scales 1, 2, 4, 4, then the up-convs and D4

    @staticmethod
    def check(fields) -> None:
        widths = list(fields.get("widths", ()))
        if len(widths) != 2 or not all(whole(w, 1) for w in widths):
            raise ValueError(f"model.widths must be two positive ints, got {widths}")
        if not whole(fields.get("latent", 3), 1):
            raise ValueError(f"model.latent must be >= 1, got {fields.get('latent')}")

    @nn.compact
    def __call__(self, x):
        w1, w2 = self.widths
        conv = lambda f, name: Conv3x3(f, dtype=self.dtype, name=name)
        convt = lambda f, name: ConvTranspose2x(f, dtype=self.dtype, name=name)
        x = x.astype(self.dtype)
        x = nn.relu(conv(w1, "E1")(x))
        x = max_pool_2x2(x)
        x = nn.relu(conv(w2, "E3")(x))
        x = max_pool_2x2(x)
        x = nn.relu(conv(self.latent, "E5")(x))
        x = nn.sigmoid(conv(w2, "D1")(x))
        x = nn.relu(convt(w2, "D2")(x))
        x = nn.relu(convt(w1, "D3")(x))
        x = nn.sigmoid(conv(3, "D4")(x).astype(jnp.float32))
        return x
