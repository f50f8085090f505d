"""benchmarks/conv_variants.py: the kernel gradient as one dot per tap gives XLA's gradients,
and only the calls it covers take it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import conv_variants


@pytest.mark.parametrize("kernel,padding", [((3, 3), "SAME"), ((1, 1), "VALID"),
                                            ((3, 2), ((2, 0), (1, 1)))])
def test_weight_grad_as_dots_gives_xla_s_gradients(kernel, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, 3, 4)), jnp.float32)

  def loss(x, w):
    y = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))
  grads = jax.grad(loss, argnums=(0, 1))
  want = grads(x, w)
  with conv_variants.weight_grad_as_dots():
    got = grads(x, w)
    assert "custom_vjp_call" in str(jax.make_jaxpr(grads)(x, w))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_strided_and_channels_first_calls_are_xla_s():
  x = jnp.ones((1, 3, 6, 6))
  w = jnp.ones((4, 3, 3, 3))
  with conv_variants.weight_grad_as_dots():
    jaxpr = str(jax.make_jaxpr(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")))(x, w))
    strided = str(jax.make_jaxpr(lambda x, w: lax.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(
            jnp.ones((1, 6, 6, 3)), jnp.ones((3, 3, 3, 4))))
  assert "custom_vjp_call" not in jaxpr and "custom_vjp_call" not in strided
