"""oneDNN convolutions (jaxdenoise.native.onednn): built and loaded here, and the same function as XLA's
convolutions, forward and both gradients, in every layer that uses them and in a whole U-Net."""
from __future__ import annotations

import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdenoise.models import layers
from jaxdenoise.native import onednn

pytestmark = pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                                reason="the oneDNN wheel is built for Linux x86_64 only")
_DN = ("NHWC", "HWIO", "NHWC")


def test_the_library_builds_and_loads_here():
    assert onednn.load(), onednn.why_not()
    assert onednn.enabled(jnp.float32)
    assert onednn.enabled(jnp.bfloat16) == onednn.bf16_native()  # bfloat16 where the CPU multiplies it
    assert not onednn.enabled(jnp.float16)  # other dtypes keep XLA's convolutions
    with onednn.xla_only():
        assert not onednn.enabled(jnp.float32)


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def _vjp_both(fn, x, k, seed=0):
    """(output, dx, dk) of ``fn`` for a random output gradient, jitted, with and without oneDNN."""
    out = []
    for xla in (False, True):
        def run(x, k, g):
            y, vjp = jax.vjp(fn, x, k)
            return (y,) + vjp(g)
        with onednn.xla_only() if xla else _nothing():
            y_shape = jax.eval_shape(fn, x, k).shape
            g = jax.random.normal(jax.random.PRNGKey(seed), y_shape)
            compiled = jax.jit(run).lower(x, k, g).compile()
            assert ("JdConv" in compiled.as_text()) != xla  # the path under test really ran
            out.append(compiled(x, k, g))
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _close(got, want, tol=2e-5):
    for a, b in zip(got, want, strict=True):
        scale = float(jnp.max(jnp.abs(b))) or 1.0
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=tol)


@pytest.mark.parametrize("shape,cout", [((2, 7, 6, 64), 3), ((1, 9, 5, 3), 8), ((3, 16, 16, 32), 32)])
def test_conv3x3_equals_xla_forward_and_both_gradients(shape, cout):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    k = jax.random.normal(jax.random.PRNGKey(2), (3, 3, shape[-1], cout)) * 0.2
    ours, xla = _vjp_both(layers.conv3x3, x, k)
    _close(ours, xla)
    ref = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_DN)
    _close(ours[:1], (ref,))


@pytest.mark.parametrize("shape,cout", [((2, 6, 5, 4), 7), ((1, 8, 8, 128), 64)])
def test_transposed_conv_equals_xla_forward_and_both_gradients(shape, cout):
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(3), shape)
    k = jax.random.normal(jax.random.PRNGKey(4), (3, 3, shape[-1], cout)) * 0.2
    ours, xla = _vjp_both(layers.conv_transpose_2x, x, k)
    _close(ours, xla)
    flax_ref = nn.ConvTranspose(cout, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)
    with onednn.xla_only():
        ref = flax_ref.apply({"params": {"kernel": k}}, x)
    _close(ours[:1], (ref,))


@pytest.mark.parametrize("stride,lo,hi", [(1, 1, 1), (2, 0, 1), (2, 1, 1), (1, 0, 2)])
def test_generic_products_equal_lax(stride, lo, hi):
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 10, 8, 6))
    k = jax.random.normal(jax.random.PRNGKey(6), (3, 3, 6, 5))
    conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (stride, stride), ((lo, hi), (lo, hi)),
                                                     dimension_numbers=_DN)
    y, vjp = jax.vjp(conv, x, k)
    g = jax.random.normal(jax.random.PRNGKey(7), y.shape)
    dx, dk = vjp(g)
    got = jax.jit(lambda x, k, g: (onednn.conv(x, k, stride, lo, hi),
                                   onednn.conv_backward_data(g, k, x.shape, stride, lo, hi),
                                   onednn.conv_backward_weights(x, g, k.shape, stride, lo, hi)))(x, k, g)
    _close(got, (y, dx, dk))


def test_unet_with_onednn_equals_unet_with_xla_and_exports_without_it(tmp_path):
    import ml_collections
    from jaxdenoise import models
    from jaxdenoise.inference import export, exported

    cfg = ml_collections.ConfigDict(dict(name="unet", widths=(8, 16), residual=True, noise_level=False))
    model = models.create(cfg)
    x = jax.random.uniform(jax.random.PRNGKey(8), (2, 16, 16, 3))
    params = model.init(jax.random.PRNGKey(9), x)["params"]
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(10), p.shape), params)

    def loss(p, x):
        return jnp.mean(jnp.abs(model.apply({"params": p}, x) - 0.5))
    fn = jax.jit(jax.value_and_grad(loss))
    assert "JdConv" in fn.lower(params, x).as_text()
    ours = fn(params, x)
    with onednn.xla_only():
        xla = jax.jit(jax.value_and_grad(loss))(params, x)
    _close(jax.tree.leaves(ours), jax.tree.leaves(xla), tol=1e-4)

    config = ml_collections.ConfigDict(dict(model=cfg))
    data = export.export_bytes(config, params, model, {"stride": model.stride}, platforms=("cpu",))
    path = tmp_path / "m.jaxdn"
    path.write_bytes(data)
    _, fn = exported.read(str(path))
    assert "JdConv" not in fn.mlir_module()  # runs in a process that never loaded the library


@pytest.mark.skipif(not onednn.bf16_native(), reason="no bfloat16 arithmetic on this CPU (oneDNN would emulate it)")
@pytest.mark.parametrize("op", [layers.conv3x3, layers.conv_transpose_2x])
def test_bfloat16_products_equal_float32_ones_to_bfloat16_rounding(op):
    assert onednn.enabled(jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(11), (2, 8, 8, 32)).astype(jnp.bfloat16)
    k = (0.2 * jax.random.normal(jax.random.PRNGKey(12), (3, 3, 32, 16))).astype(jnp.bfloat16)
    y, vjp = jax.jit(lambda x, k: jax.vjp(op, x, k))(x, k)
    g = jax.random.normal(jax.random.PRNGKey(13), y.shape).astype(jnp.bfloat16)
    got = (y,) + jax.jit(vjp)(g)
    assert all(a.dtype == jnp.bfloat16 for a in got)
    with onednn.xla_only():  # the same bfloat16 values, multiplied in float32
        f32 = lambda x, k: op(x.astype(jnp.float32), k.astype(jnp.float32))
        y32, vjp32 = jax.vjp(f32, x, k)
        want = (y32,) + vjp32(g.astype(jnp.float32))
    _close([a.astype(jnp.float32) for a in got], want, tol=1e-2)  # bfloat16 keeps 8 bits: 2^-8 ~ 0.4 %
