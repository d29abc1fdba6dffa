"""NAFNet (Chen et al. 2022, "Simple Baselines for Image Restoration"): a U-shaped net of activation-free blocks.

NAFBlock(c), as in the paper's Fig. 3c (no nonlinear activation anywhere):

    y = x + beta  * conv1x1(SCA(SimpleGate(dwconv3x3(conv1x1_{c->2c}(LayerNorm(x))))))
    z = y + gamma * conv1x1(SimpleGate(conv1x1_{c->2c}(LayerNorm(y))))

SimpleGate splits the channels in two halves and multiplies them; SCA (simplified channel attention) scales
the channels by ``conv1x1(global average pool)``; beta and gamma start at 0, so each block starts as the
identity. Layout: intro conv 3x3 (3 -> width); per encoder level ``enc_blocks[i]`` blocks then a 2x2
stride-2 conv doubling the channels; ``middle_blocks`` blocks; per decoder level a 1x1 conv and a pixel
shuffle (side x2, channels / 2), the encoder's features added, ``dec_blocks[i]`` blocks; ending conv 3x3
(width -> 3) added to the input (global residual).

Initialisation, after the reference code (megvii-research/NAFNet, PyTorch): every conv draws from PyTorch's
``nn.Conv2d`` default, U(+-1/sqrt(fan_in)) (``layers.TORCH_DEFAULT``: variance 1/(3 fan_in), a third of flax's
lecun_normal), biases zero; and the ending conv is zero, so the net starts as output = input exactly. Why:
the blocks start as the identity, but the path intro -> down convs -> up convs + skips -> ending conv does
not, and it is added to the input: with flax's default initialisers the first output was ~1.0 (std) away
from the input (PSNR 6.7 dB against it), and 60 steps of Adam at 1e-3 ended at ~2x the noisy input's loss.
Measured 2026-12-02 (2-core CPU, default size, 32x32 built-in crops, batch 8, Adam 1e-3, poisson:10; mean
loss of steps 51-60, the noisy input's 0.0267): flax default 0.0501; PyTorch default with a random ending conv
0.0135 (first output 0.14 away); flax default with a zero ending 0.0085; this model 0.0083.

Widths: the paper's SIDD model is width 32, enc (2, 2, 4, 8), middle 12, dec (2, 2, 2, 2) (GPU work); the
default here, width 16 with one block per level over 3 levels and 1 in the middle, is the small CPU size
(288,691 parameters; the paper's width-32 SIDD layout: 29,159,715). Input sides must be multiples of ``2 ** len(enc_blocks)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdenoise.models.layers import Conv3x3, LevelInput, TORCH_DEFAULT, whole


class NAFBlock(nn.Module):
    """``[B, H, W, c]`` -> ``[B, H, W, c]``."""
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        conv1 = lambda f, name: nn.Conv(f, (1, 1), kernel_init=TORCH_DEFAULT, dtype=self.dtype, name=name)
        gate = lambda h: h[..., :h.shape[-1] // 2] * h[..., h.shape[-1] // 2:]
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x)
        h = conv1(2 * c, "conv1")(h)
        h = nn.Conv(2 * c, (3, 3), padding="SAME", feature_group_count=2 * c,
                    kernel_init=TORCH_DEFAULT, dtype=self.dtype, name="dwconv")(h)
        h = gate(h)
        h = h * conv1(c, "sca")(jnp.mean(h, axis=(1, 2), keepdims=True))
        h = conv1(c, "conv3")(h)
        beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32).astype(self.dtype)
        y = x + h * beta
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm2")(y)
        h = gate(conv1(2 * c, "conv4")(h))
        h = conv1(c, "conv5")(h)
        gamma = self.param("gamma", nn.initializers.zeros, (c,), jnp.float32).astype(self.dtype)
        return y + h * gamma


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """``[B, H, W, C r^2]`` -> ``[B, H r, W r, C]`` (depth-to-space, PyTorch's PixelShuffle channel order)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, c // (r * r), r, r)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


class NAFNet(LevelInput, nn.Module):
    """``float [B, H, W, 3]`` in [0, 1] -> ``float32 [B, H, W, 3]``; H, W multiples of ``stride``."""
    width: int = 16
    enc_blocks: Sequence[int] = (1, 1, 1)
    middle_blocks: int = 1
    dec_blocks: Sequence[int] = (1, 1, 1)
    noise_level: bool = False  # FFDNet-style: a noise-level map as a 4th input channel
    dtype: Any = jnp.float32
    # most of the step is XLA's (depthwise convs, norms, gates): micro-batches stay the CPU default
    conv_bound = False

    @property
    def stride(self) -> int:
        return 2 ** len(self.enc_blocks)

    @property
    def receptive_field(self) -> int:
        # every block has one 3x3 depthwise conv, but SCA's global pool sees the whole input: the field is
        # unbounded; this is the span of the convolutions, for tile overlaps
        rf, scale = 3, 1
        for n in self.enc_blocks:
            rf += 2 * n * scale + scale
            scale *= 2
        rf += 2 * self.middle_blocks * scale
        for n in self.dec_blocks:
            scale //= 2
            rf += 2 * n * scale
        return rf + 2

    @staticmethod
    def check(fields) -> None:
        enc, dec = list(fields.get("enc_blocks", ())), list(fields.get("dec_blocks", ()))
        if len(enc) != len(dec) or not enc:
            raise ValueError(f"model.enc_blocks and model.dec_blocks must have the same, non-zero length, got "
                             f"{enc} and {dec}")
        for name, blocks in (("enc_blocks", enc), ("dec_blocks", dec)):
            if not all(whole(n, 0) for n in blocks):
                raise ValueError(f"model.{name} must be block counts >= 0 per level, got {tuple(blocks)}")
        if not whole(fields.get("width", 16), 1):
            raise ValueError(f"model.width must be >= 1, got {fields.get('width')}")
        if not whole(fields.get("middle_blocks", 1), 0):
            raise ValueError(f"model.middle_blocks must be >= 0, got {fields.get('middle_blocks')}")

    @nn.compact
    def __call__(self, x):
        noisy = x[..., :3].astype(jnp.float32)
        h = Conv3x3(self.width, kernel_init=TORCH_DEFAULT, dtype=self.dtype, name="intro")(x.astype(self.dtype))
        c, skips = self.width, []
        for i, n in enumerate(self.enc_blocks):
            for j in range(n):
                h = NAFBlock(self.dtype, name=f"enc{i}_{j}")(h)
            skips.append(h)
            h = nn.Conv(2 * c, (2, 2), strides=(2, 2), padding="VALID",
                        kernel_init=TORCH_DEFAULT, dtype=self.dtype, name=f"down{i}")(h)
            c *= 2
        for j in range(self.middle_blocks):
            h = NAFBlock(self.dtype, name=f"middle{j}")(h)
        for i, n in enumerate(self.dec_blocks):
            h = pixel_shuffle(nn.Conv(2 * c, (1, 1), use_bias=False, kernel_init=TORCH_DEFAULT,
                                         dtype=self.dtype, name=f"up{i}")(h))
            c //= 2
            h = h + skips[-1 - i]
            for j in range(n):
                h = NAFBlock(self.dtype, name=f"dec{i}_{j}")(h)
        # zero-initialised: the net starts as output = input exactly (see the module docstring)
        ending = Conv3x3(3, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="ending")
        return noisy + ending(h).astype(jnp.float32)
