"""arch.conv computes what jax.lax computes: values, gradients, second derivatives (float64)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from arch import conv

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
# (ndim, input size, kernel, stride, padding): odd and even sizes, kernels shorter and longer
# than the stride, string and explicit (asymmetric) paddings.
CASES = [(1, 5, 3, 2, "SAME"), (1, 8, 4, 2, (1, 2)), (1, 5, 1, 3, "VALID"), (2, 8, 4, 2, "SAME"),
         (2, 5, 3, 2, "VALID"), (2, 8, 3, 2, (1, 2)), (2, 5, 4, 3, "SAME")]


@pytest.fixture(autouse=True)
def rewrite_every_size(monkeypatch):
  """These convolutions are tiny: without this, transposed ones would stay with jax.lax."""
  monkeypatch.setattr(conv, "MIN_REWRITE_MACS", 0)


@pytest.fixture(params=["im2col", "convolutions"])
def gradients(request, monkeypatch):
  """A strided convolution's gradients both ways: as matrix products over the patch matrix (these
  sizes' own choice) and as convolutions (XLA's kernel gradient, the phase input gradient)."""
  if request.param == "convolutions":
    monkeypatch.setattr(conv, "IM2COL_MACS", 0)
    monkeypatch.setattr(conv, "IM2COL_ELEMENTS", 0)
  return request.param


def _data(nd, size, k, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(2,) + (size,) * nd + (3,)))
  w = jnp.asarray(rng.normal(size=(k,) * nd + (3, 4)))
  return x, w


def _pad(pad, nd):
  return pad if isinstance(pad, str) else (pad,) * nd


def _check(ref, new, x, w):
  np.testing.assert_allclose(new(x, w), ref(x, w), rtol=0, atol=1e-10)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
  for a, b in zip(jax.grad(loss(ref), (0, 1))(x, w), jax.grad(loss(new), (0, 1))(x, w)):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)


@pytest.mark.parametrize("nd,size,k,s,pad", CASES)
def test_strided_and_transposed_convolutions_equal_lax(nd, size, k, s, pad, gradients):
  with jax.enable_x64(True):
    x, w = _data(nd, size, k)
    strides, padding = (s,) * nd, _pad(pad, nd)
    _check(lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                                 dimension_numbers=SPECS[nd]),
           lambda x, w: conv.conv_general_dilated(x, w, strides, padding,
                                                  dimension_numbers=SPECS[nd]), x, w)
    # lax.conv_transpose reads explicit pads differently; transposed convolutions have no
    # strided gradients to choose
    if isinstance(pad, str) and gradients == "im2col":
      _check(lambda x, w: lax.conv_transpose(x, w, strides, pad),
             lambda x, w: conv.conv_transpose(x, w, strides, pad), x, w)


def test_second_derivatives_equal_lax(gradients):
  """The R1 penalty differentiates a gradient: the custom input gradient is differentiable."""
  with jax.enable_x64(True):
    x, w = _data(2, 8, 4, seed=1)
    x = jnp.concatenate([x] * 2)

    def r1(f):
      def penalty(w):
        g = jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x)
        return jnp.sum(g ** 2)
      return jax.value_and_grad(penalty)(w)

    args = dict(window_strides=(2, 2), padding=((1, 1), (1, 1)), dimension_numbers=SPECS[2])
    (a, ga), (b, gb) = (r1(lambda x, w: lax.conv_general_dilated(x, w, **args)),
                        r1(lambda x, w: conv.conv_general_dilated(x, w, **args)))
    np.testing.assert_allclose(b, a, rtol=1e-12)
    np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-10)


def test_small_transposed_convolutions_stay_with_lax(monkeypatch):
  monkeypatch.setattr(conv, "MIN_REWRITE_MACS", 10_000_000)
  x, w = jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 3, 4))
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv_transpose(x, w, (2, 2), "SAME"))(x, w))
  assert jaxpr.count("conv_general_dilated") == 1 and "lhs_dilation=(2, 2)" in jaxpr
  monkeypatch.setattr(conv, "MIN_REWRITE_MACS", 0)
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv_transpose(x, w, (2, 2), "SAME"))(x, w))
  assert jaxpr.count("conv_general_dilated") == 4 and "lhs_dilation=(2, 2)" not in jaxpr


def test_modules_match_flax_parameters_and_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
  for ours, theirs in ((conv.Conv(5, (3, 3), strides=(2, 2)), nn.Conv(5, (3, 3), strides=(2, 2))),
                       (conv.ConvTranspose(5, (4, 4), strides=(2, 2)),
                        nn.ConvTranspose(5, (4, 4), strides=(2, 2)))):
    params = ours.init(jax.random.key(1), x)
    reference = theirs.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
      np.testing.assert_array_equal(a, b)  # same initialisers, same draws
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5,
                               atol=1e-5)


def test_a_program_traced_for_a_tpu_keeps_the_cpu_rewrites_out():
  # train.aot compiles for a TPU on this CPU host: what it traces must be what a TPU would trace
  from arch import attention, common

  x = jnp.ones((2, 8, 8, 3))
  w = jnp.ones((3, 3, 3, 4))
  q = jnp.ones((2, 16, 2, 8))

  def conv_grad(x):  # a new function each time: jax caches a function's trace
    return jax.grad(lambda x: conv.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum())(x)

  def lax_grad(x):
    return jax.grad(lambda x: lax.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum())(x)

  def attend(q):
    return attention.dot_product_attention(q, q, q, is_causal=True)

  lax_program = str(jax.make_jaxpr(lax_grad)(x))
  assert str(jax.make_jaxpr(lambda x: conv_grad(x))(x)) != lax_program  # this host's rewrite
  assert "custom_vjp" in str(jax.make_jaxpr(lambda q: attend(q))(q))
  with common.compiling_for("tpu"):
    assert common.target_platform() == "tpu"
    assert str(jax.make_jaxpr(lambda x: conv_grad(x))(x)) == lax_program
    assert str(jax.make_jaxpr(lambda q: attend(q))(q)) == str(jax.make_jaxpr(
        lambda q: jax.nn.dot_product_attention(q, q, q, is_causal=True))(q))
  assert common.target_platform() == "cpu"


def test_small_strided_convolutions_train_through_matrix_products(monkeypatch):
  """Within the `IM2COL_*` bounds a differentiated strided convolution and its gradients hold no
  convolution; at 0 they are XLA's forward pass and kernel gradient and the four phase
  convolutions of the input gradient. Undifferentiated, it is XLA's convolution either way."""
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))  # a 32 x 27 patch matrix

  def convolutions():  # traced afresh: the thresholds are read at tracing
    loss = lambda x, w: jnp.sum(conv.conv_general_dilated(  # noqa: E731
        x, w, (2, 2), "SAME", dimension_numbers=SPECS[2]) ** 2)
    return jax.jit(jax.grad(loss, (0, 1))).lower(x, w).as_text().count("stablehlo.convolution")

  assert convolutions() == 0
  forward = jax.jit(lambda x, w: conv.conv_general_dilated(x, w, (2, 2), "SAME",
                                                           dimension_numbers=SPECS[2]))
  assert forward.lower(x, w).as_text().count("stablehlo.convolution") == 1
  monkeypatch.setattr(conv, "IM2COL_MACS", 0)
  monkeypatch.setattr(conv, "IM2COL_ELEMENTS", 0)
  assert convolutions() == 6
