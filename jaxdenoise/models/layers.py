"""Layers shared by the models."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """3x3 transposed-conv kernel ``[3, 3, Cin, Cout]`` -> equivalent 2x2 conv kernel ``[2, 2, Cin, 4*Cout]``.

    For a stride-2, 'SAME' transposed conv (lax.conv_transpose padding (2, 1) per side, kernel not flipped),
    along one axis output ``y[2i] = k[0] x[i-1] + k[2] x[i]`` and ``y[2i+1] = k[1] x[i]``. So each of
    the four output phases (a, b) is a 2x2 conv over x padded by one row/column at the top/left, with taps
    (dy, dx) in {0: x[i-1], 1: x[i]}; output channels are ordered (a, b, Cout) for the depth-to-space.
    """
    zero = jnp.zeros_like(kernel[0, 0])
    rows = ((0, 2), (None, 1))  # rows[phase][d]: kernel tap for input offset d (0: x[i-1], 1: x[i])
    out = []
    for dy in range(2):
        row = []
        for dx in range(2):
            phases = []
            for a in range(2):
                for b in range(2):
                    ty, tx = rows[a][dy], rows[b][dx]
                    phases.append(zero if ty is None or tx is None else kernel[ty, tx])
            row.append(jnp.concatenate(phases, axis=-1))  # [Cin, 4*Cout]
        out.append(jnp.stack(row))
    return jnp.stack(out)  # [2, 2, Cin, 4*Cout]


class ConvTranspose2x(nn.Module):
    """3x3, stride-2, 'SAME' transposed conv (output side doubled), computed as a sub-pixel conv.

    Same parameters (``kernel [3, 3, Cin, Cout]``, ``bias [Cout]``) and the same function as
    ``nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME")`` (tested), but XLA's CPU backend
    runs the input-dilated convolution of a transposed conv 5-10x slower than a plain one, forward and
    backward: here it is a 2x2 conv with 4x the channels followed by a depth-to-space.
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
        x = x.astype(self.dtype)
        k = _subpixel_kernel(kernel).astype(self.dtype)
        y = jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))), k, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        b, h, w, _ = y.shape
        y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w,
                                                                                         self.features)
        return y + bias.astype(self.dtype)
