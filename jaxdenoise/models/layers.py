"""Layers shared by the models: the same functions as flax's Conv / ConvTranspose / max_pool, computed in
ways that XLA runs faster (measured on CPU, see ``docs/benchmarks.md``); each is tested equal to the flax or
lax original, forward and backward."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdenoise.native import onednn


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


def _taps(x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H, W, 9C]``: the 3x3 neighbourhood (zero-padded), tap-major (ky, kx, c)."""
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)


@jax.custom_vjp
def _conv_thin_out(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv(x, kernel)


def _conv_thin_out_fwd(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _conv_thin_out_bwd(res, g):
    # The kernel gradient of a conv with few outputs (64 -> 3) is a contraction over every pixel into a tiny
    # [3, 3, Cin, Cout] result, which XLA's CPU convolution runs at ~2 GFLOP/s whatever the batch. As one
    # matmul [9 Cout, pixels] x [pixels, Cin] over the 3x3 taps of g (9 Cout channels: narrower than x) it
    # runs ~2-4x faster. The input gradient stays XLA's.
    x, kernel = res
    dx = jax.vjp(lambda x: _conv(x, kernel), x)[1](g)[0]
    cin, cout = kernel.shape[2], kernel.shape[3]
    d = jnp.einsum("bhwq,bhwc->qc", _taps(g), x, preferred_element_type=jnp.float32)  # q = (i, j, cout)
    # d[i, j] = sum_p x[p] g[p + (i, j) - 1] = dW[2 - i, 2 - j]
    dk = d.reshape(3, 3, cout, cin)[::-1, ::-1].transpose(0, 1, 3, 2)
    return dx, dk.astype(kernel.dtype)


_conv_thin_out.defvjp(_conv_thin_out_fwd, _conv_thin_out_bwd)


@jax.custom_vjp
def _conv_onednn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return onednn.conv(x, kernel)


def _conv_onednn_fwd(x, kernel):
    return onednn.conv(x, kernel), (x, kernel)


def _conv_onednn_bwd(res, g):
    x, kernel = res
    return onednn.conv_backward_data(g, kernel, x.shape), onednn.conv_backward_weights(x, g, kernel.shape)


_conv_onednn.defvjp(_conv_onednn_fwd, _conv_onednn_bwd)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3, stride-1, 'SAME' conv: ``[B, H, W, Cin]``, ``[3, 3, Cin, Cout]`` -> ``[B, H, W, Cout]``.

    On a CPU with oneDNN loaded (``native.onednn.enabled``): oneDNN's forward and both gradients. Otherwise
    ``lax.conv_general_dilated`` forward; when the 9 taps of the output are narrower than the input
    (``9 Cout <= Cin``: the paper model's 64 -> 3 output layer) the kernel gradient is computed as a matmul.
    """
    if onednn.enabled(x.dtype):
        return _conv_onednn(x, kernel.astype(x.dtype))
    if 9 * kernel.shape[3] <= kernel.shape[2]:
        return _conv_thin_out(x, kernel)
    return _conv(x, kernel)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2, stride-2 max-pool: ``[B, H, W, C]`` (H, W even) -> ``[B, H/2, W/2, C]``, as ``nn.max_pool``.

    The gradient goes to the first maximum of each window in row-major order, exactly as XLA's
    select-and-scatter (tested equal), but as one elementwise pass: select-and-scatter on XLA's CPU backend
    took ~40 % of the paper model's training step (275 ms of a ~700 ms step at batch 16).
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _max_pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    b, h, w, c = x.shape
    xr = x.reshape(b, h // 2, 2, w // 2, 2, c)
    yb, gb = y[:, :, None, :, None, :], g[:, :, None, :, None, :]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(yb.shape, bool)
    rows = []
    for i in range(2):
        row = []
        for j in range(2):
            hit = (xr[:, :, i:i + 1, :, j:j + 1, :] == yb) & ~taken
            taken = taken | hit
            row.append(jnp.where(hit, gb, zero))
        rows.append(jnp.concatenate(row, axis=4))
    return (jnp.concatenate(rows, axis=2).reshape(x.shape),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


_TAPS = {0: (0, 2), 1: (1,)}  # output phase -> kernel taps, for input offsets (x[i-1], x[i]) or (x[i],)


def conv_transpose_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-2, 3x3, 'SAME' transposed conv (``lax.conv_transpose`` padding (2, 1), kernel not flipped) as
    four small convs, one per output phase: ``[B, H, W, Cin]``, ``[3, 3, Cin, Cout]`` -> ``[B, 2H, 2W, Cout]``.

    Along one axis ``y[2i] = k[0] x[i-1] + k[2] x[i]`` and ``y[2i+1] = k[1] x[i]``; so phase (a, b) is a
    (2 or 1) x (2 or 1) conv, 9 taps in all: no multiplications by inserted zeros, unlike the input-dilated
    conv XLA would otherwise run (5-10x slower on CPU, forward and backward). On a CPU with oneDNN loaded
    (``native.onednn.enabled``): ``_conv_transpose_onednn`` instead.
    """
    if onednn.enabled(x.dtype):
        return _conv_transpose_onednn(x, kernel.astype(x.dtype))
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
    phases = {}
    for a in (0, 1):
        for b in (0, 1):
            k = kernel[jnp.array(_TAPS[a])][:, jnp.array(_TAPS[b])]  # [ny, nx, Cin, Cout]
            inp = xp[:, a:, b:]  # phase 1 needs no x[i-1]: skip the padding row/column
            phases[a, b] = jax.lax.conv_general_dilated(inp, k, (1, 1), "VALID", dimension_numbers=_DN)[:, :h, :w]
    rows = [jnp.stack([phases[a, 0], phases[a, 1]], axis=3) for a in (0, 1)]  # [B, H, W, 2, C]
    y = jnp.stack(rows, axis=2)  # [B, H, 2, W, 2, C]
    return y.reshape(x.shape[0], 2 * h, 2 * w, kernel.shape[-1])


# The transposed conv as oneDNN convolution products. Along one axis it is the input gradient of a stride-2
# conv with padding (0, 1) whose kernel is this one flipped (y[2i] = k[0] x[i-1] + k[2] x[i], y[2i+1] =
# k[1] x[i], the docstring above) and whose input and output channels swap places: HWIO [3, 3, Cout, Cin].
_UP = dict(stride=2, lo=0, hi=1)


def _as_conv_kernel(kernel):
    return kernel[::-1, ::-1].transpose(0, 1, 3, 2)


def _up_shape(x, kernel):
    return (x.shape[0], 2 * x.shape[1], 2 * x.shape[2], kernel.shape[3])


@jax.custom_vjp
def _conv_transpose_onednn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return onednn.conv_backward_data(x, _as_conv_kernel(kernel), _up_shape(x, kernel), **_UP)


def _conv_transpose_onednn_fwd(x, kernel):
    return _conv_transpose_onednn(x, kernel), (x, kernel)


def _conv_transpose_onednn_bwd(res, g):
    x, kernel = res
    k = _as_conv_kernel(kernel)
    dx = onednn.conv(g, k, **_UP)
    dk = onednn.conv_backward_weights(g, x, k.shape, **_UP)
    return dx, _as_conv_kernel(dk)


_conv_transpose_onednn.defvjp(_conv_transpose_onednn_fwd, _conv_transpose_onednn_bwd)


# Initialisers the models choose from (each model's docstring says which it uses and after which reference):
# flax's default, lecun_normal, has variance 1 / fan_in. PyTorch's nn.Conv2d default is kaiming_uniform with
# a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1 / (3 fan_in), a third of flax's, so a port
# of a PyTorch model that keeps flax's default starts with every layer sqrt(3) times larger.
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# He et al. 2015 ("MSRA"): variance 2 / fan_in, which keeps the signal's scale through ReLU layers.
HE_NORMAL = nn.initializers.he_normal()


class _Kernel3x3(nn.Module):
    """A 3x3 layer with flax's Conv/ConvTranspose parameters (kernel ``[3, 3, Cin, features]`` from
    ``kernel_init``, lecun-normal by default as flax's; bias ``[features]`` zeros, unless ``use_bias`` is
    off), computing ``op(x, kernel) + bias`` in ``dtype``; subclasses set ``op``."""
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    use_bias: bool = True
    op = None  # staticmethod (x, kernel) -> y; not a dataclass field

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (3, 3, cin, self.features), self.param_dtype)
        y = self.op(x.astype(self.dtype), kernel.astype(self.dtype))
        if not self.use_bias:
            return y
        return y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(self.dtype)


class Conv3x3(_Kernel3x3):
    """``nn.Conv(features, (3, 3), padding="SAME")`` with the same parameters and function, computed by
    ``conv3x3``. ``[B, H, W, Cin]`` -> ``[B, H, W, features]``.
    """
    op = staticmethod(conv3x3)


class ConvTranspose2x(_Kernel3x3):
    """3x3, stride-2, 'SAME' transposed conv (output side doubled), computed as a sub-pixel conv.

    Same parameters and the same function as ``nn.ConvTranspose(features, (3, 3), strides=(2, 2),
    padding="SAME")`` (tested), but computed by ``conv_transpose_2x``: XLA's CPU backend runs the
    input-dilated convolution of a transposed conv 5-10x slower than plain convs, forward and backward.
    ``float [B, H, W, Cin]`` -> ``[B, 2H, 2W, features]``.
    """
    op = staticmethod(conv_transpose_2x)


class LevelInput:
    """For a model with a ``noise_level`` field (FFDNet-style: the noise-level map as a 4th input channel)."""

    @property
    def in_channels(self) -> int:
        """3 (blind), or 4 with ``noise_level``: the image and its noise-level map (``noise.level_map``)."""
        return 4 if self.noise_level else 3


def check_level_widths(fields) -> None:
    """A one-line ValueError unless ``widths`` is 1 to 6 positive ints (channels per level of a U-shape)."""
    widths = list(fields.get("widths", ()))
    if not widths or not all(whole(w, 1) for w in widths) or len(widths) > 6:
        raise ValueError(f"model.widths must be 1 to 6 positive ints (channels per level), got {widths}")


def whole(value, minimum: int) -> bool:
    """True for an int (not a bool, not a float such as 8.5) that is at least ``minimum``: model fields that
    count channels, layers or blocks."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
