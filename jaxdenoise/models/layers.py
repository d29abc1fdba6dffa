"""Layers shared by the models."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


_TAPS = {0: (0, 2), 1: (1,)}  # output phase -> kernel taps, for input offsets (x[i-1], x[i]) or (x[i],)


def conv_transpose_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-2, 3x3, 'SAME' transposed conv (``lax.conv_transpose`` padding (2, 1), kernel not flipped) as
    four small convs, one per output phase: ``[B, H, W, Cin]``, ``[3, 3, Cin, Cout]`` -> ``[B, 2H, 2W, Cout]``.

    Along one axis ``y[2i] = k[0] x[i-1] + k[2] x[i]`` and ``y[2i+1] = k[1] x[i]``; so phase (a, b) is a
    (2 or 1) x (2 or 1) conv, 9 taps in all: no multiplications by inserted zeros, unlike the input-dilated
    conv XLA would otherwise run (5-10x slower on CPU, forward and backward).
    """
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
    phases = {}
    for a in (0, 1):
        for b in (0, 1):
            k = kernel[jnp.array(_TAPS[a])][:, jnp.array(_TAPS[b])]  # [ny, nx, Cin, Cout]
            inp = xp[:, a:, b:]  # phase 1 needs no x[i-1]: skip the padding row/column
            phases[a, b] = jax.lax.conv_general_dilated(inp, k, (1, 1), "VALID",
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, :h, :w]
    rows = [jnp.stack([phases[a, 0], phases[a, 1]], axis=3) for a in (0, 1)]  # [B, H, W, 2, C]
    y = jnp.stack(rows, axis=2)  # [B, H, 2, W, 2, C]
    return y.reshape(x.shape[0], 2 * h, 2 * w, kernel.shape[-1])


class ConvTranspose2x(nn.Module):
    """3x3, stride-2, 'SAME' transposed conv (output side doubled), computed as a sub-pixel conv.

    Same parameters (``kernel [3, 3, Cin, Cout]``, ``bias [Cout]``) and the same function as
    ``nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME")`` (tested), but computed by
    ``conv_transpose_2x``: XLA's CPU backend runs the input-dilated convolution of a transposed conv 5-10x
    slower than plain convs, forward and backward.
    ``float [B, H, W, Cin]`` -> ``[B, 2H, 2W, features]``.
    """
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        y = conv_transpose_2x(x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)
