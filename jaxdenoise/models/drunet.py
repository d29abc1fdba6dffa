"""DRUNet (Zhang et al. 2021, "Plug-and-Play Image Restoration with Deep Denoiser Prior"): a U-Net of residual
blocks, with strided convs down and transposed convs up, skips added (not concatenated), no batch norm.

From the reference code (cszn/KAIR, ``models/network_unet.py``, ``UNetRes``), for widths c_0 .. c_{L-1}::

    x_0 = conv3x3(input)                                   head, 3 (or 4) -> c_0
    x_i = down(ResBlock^nb(x_{i-1}))    i = 1 .. L-1       down: 2x2 conv, stride 2, c_{i-1} -> c_i
    h   = ResBlock^nb(x_{L-1})                             body
    h   = ResBlock^nb(up(h + x_i))      i = L-1 .. 1       up: 2x2 transposed conv, stride 2, c_i -> c_{i-1}
    out = conv3x3(h + x_0)                                 tail, c_0 -> 3
    ResBlock(x) = x + conv3x3(relu(conv3x3(x)))

The paper's model is widths (64, 128, 256, 512), 4 blocks per level, no biases, orthogonal initialisation
at gain 0.2 (KAIR's ``train_drunet.json``), a noise-level map as the 4th input channel, and returns ``out``
as the denoised image (32.6 M parameters, GPU work). Here the same layout at the CPU size of the other
models: widths (32, 64, 128), 2 blocks per level (the default: 1,042,112 parameters, ~1.9x the U-Net's
multiply-adds per pixel); ``noise_level`` adds the map (FFDNet's and DRUNet's non-blind input); biases are
left out and every conv is drawn orthogonal at gain 0.2, as the reference trains it. ``residual`` (a
departure, default on, as in our U-Net): the output is ``noisy - out``, the net predicting the noise, so it
starts near the identity and gains from its first steps; off, it returns ``out`` as the paper does.

The 2x2 stride-2 conv is computed as a space-to-depth reshape and one matmul, the transposed one as a matmul
and a depth-to-space reshape (the same functions and parameters as ``nn.Conv`` / ``nn.ConvTranspose`` with a
2x2 kernel, stride 2, 'VALID': tested). Input sides must be multiples of ``2 ** (len(widths) - 1)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxdenoise.models.layers import Conv3x3, LevelInput, check_level_widths, whole

# KAIR's init for DRUNet: torch.nn.init.orthogonal_(weight, gain=0.2) on the [out, in * kh * kw] matrix; flax's
# orthogonal on [kh * kw * in, out] (columns: the outputs) is the same distribution
ORTHOGONAL_02 = nn.initializers.orthogonal(scale=0.2)


class _Kernel2x2(nn.Module):
    """A 2x2, stride-2 layer: kernel ``[2, 2, C, features]`` from ``kernel_init``, no bias; subclasses set
    ``op(x, kernel)``."""
    features: int
    dtype: Any = jnp.float32
    kernel_init: Any = ORTHOGONAL_02
    op = None  # staticmethod (x, kernel) -> y; not a dataclass field

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (2, 2, x.shape[-1], self.features), jnp.float32)
        return self.op(x.astype(self.dtype), kernel.astype(self.dtype))


def _down(x, kernel):
    b, h, w, c = x.shape
    return jnp.einsum("bhiwjc,ijco->bhwo", x.reshape(b, h // 2, 2, w // 2, 2, c), kernel)


def _up(x, kernel):
    b, h, w, _ = x.shape
    y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
    return y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])


class Down2x2(_Kernel2x2):
    """``nn.Conv(features, (2, 2), strides=2, padding="VALID")``: ``[B, H, W, C]`` -> ``[B, H/2, W/2, features]``,
    as a space-to-depth reshape and one matmul (kernel ``[2, 2, C, features]``; no bias)."""
    op = staticmethod(_down)


class Up2x2(_Kernel2x2):
    """``nn.ConvTranspose(features, (2, 2), strides=(2, 2), padding="VALID")``: ``[B, H, W, C]`` ->
    ``[B, 2H, 2W, features]``, output pixel ``(2h + i, 2w + j)`` = ``x[h, w] @ kernel[1 - i, 1 - j]`` (flax's
    orientation; PyTorch's ConvTranspose2d takes ``weight[..., i, j]``), as one matmul and a depth-to-space
    reshape (kernel ``[2, 2, C, features]``; no bias)."""
    op = staticmethod(_up)


class ResBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))``, the width kept."""
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = lambda name: Conv3x3(x.shape[-1], use_bias=False, kernel_init=ORTHOGONAL_02, dtype=self.dtype,
                                    name=name)
        return x + conv("conv_b")(nn.relu(conv("conv_a")(x)))


class DRUNet(LevelInput, nn.Module):
    """``float [B, H, W, 3]`` in [0, 1] (or 4 channels with ``noise_level``) -> ``float32 [B, H, W, 3]``."""
    widths: Sequence[int] = (32, 64, 128)
    blocks: int = 2
    residual: bool = True
    noise_level: bool = False
    dtype: Any = jnp.float32
    # the step's time is in Conv3x3 layers: with oneDNN's convolutions the CPU step runs the whole batch at
    # once (steps.micro_batch_chunks), not in cache-sized micro-batches
    conv_bound = True

    @property
    def stride(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input window one output pixel sees (an upper bound: the head and tail convs,
        each block's two 3x3 convs at its level's scale, each 2x2 down- and up-sampling)."""
        rf, scale = 1 + 2 + 2, 1  # head, tail
        for _ in self.widths[:-1]:
            rf += 2 * (self.blocks * 2 * 2 * scale) + 2 * scale  # blocks down and up, the 2x2 down and up
            scale *= 2
        return rf + self.blocks * 2 * 2 * scale  # the body

    @staticmethod
    def check(fields) -> None:
        check_level_widths(fields)
        if not whole(fields.get("blocks", 2), 1):
            raise ValueError(f"model.blocks must be >= 1 (residual blocks per level), got {fields.get('blocks')}")

    @nn.compact
    def __call__(self, x):
        noisy = x[..., :3].astype(jnp.float32)
        conv = lambda f, name: Conv3x3(f, use_bias=False, kernel_init=ORTHOGONAL_02, dtype=self.dtype, name=name)

        def blocks(h, name):
            for k in range(self.blocks):
                h = ResBlock(self.dtype, name=f"{name}_{k}")(h)
            return h
        h = conv(self.widths[0], "head")(x.astype(self.dtype))
        skips = [h]
        for i, w in enumerate(self.widths[1:], start=1):
            h = Down2x2(w, self.dtype, name=f"down{i}")(blocks(h, f"enc{i - 1}"))
            skips.append(h)
        h = blocks(h, "body")
        for i in reversed(range(1, len(self.widths))):
            h = blocks(Up2x2(self.widths[i - 1], self.dtype, name=f"up{i}")(h + skips[i]), f"dec{i - 1}")
        out = conv(3, "tail")(h + skips[0]).astype(jnp.float32)
        return noisy - out if self.residual else out
