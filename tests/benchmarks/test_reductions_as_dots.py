import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import reductions_as_dots


def test_layernorm_as_dots_is_flax_s_layernorm():
  from arch import transformer_stack

  x = jax.random.normal(jax.random.key(0), (3, 5, 12)) * 3 + 1
  reference = nn.LayerNorm(epsilon=1e-5)
  params = reference.init(jax.random.key(1), x)
  params = jax.tree_util.tree_map(lambda p: p + 0.1 * np.arange(p.size).reshape(p.shape), params)
  with reductions_as_dots.layernorm():
    dots = transformer_stack.norm_layer("layer")(epsilon=1e-5)
  np.testing.assert_allclose(dots.apply(params, x), reference.apply(params, x), atol=1e-5)


def test_groupnorm_as_dots_is_flax_s_groupnorm_in_the_unet():
  from arch import unet

  x = jax.random.normal(jax.random.key(0), (3, 6, 5, 16)) * 3 + 1
  reference = nn.GroupNorm(4)
  params = reference.init(jax.random.key(1), x)
  params = jax.tree_util.tree_map(lambda p: p + 0.1 * np.arange(p.size).reshape(p.shape), params)
  with reductions_as_dots.groupnorm():
    dots = unet.nn.GroupNorm(4)
    assert unet.nn.Conv is nn.Conv  # the rest of flax.linen as it was
  assert unet.nn is nn  # restored
  np.testing.assert_allclose(dots.apply(params, x), reference.apply(params, x), atol=1e-5)


def test_column_sums_as_dots_give_jax_s_gradients_through_dots():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      pos = self.param("pos", nn.initializers.normal(1.0), (1,) + x.shape[1:])
      h = nn.LayerNorm()(x + pos)
      return nn.Dense(6)(jnp.tanh(nn.Dense(10)(h)))

  x = jax.random.normal(jax.random.key(0), (4, 128, 8))  # 512 rows a column sum
  model = Model()
  params = model.init(jax.random.key(1), x)

  def loss(p):
    return jnp.sum(jnp.sin(model.apply(p, x)))

  def grads_and_hlo():
    return jax.grad(loss)(params), jax.jit(jax.grad(loss)).lower(params).as_text()

  expected, hlo = grads_and_hlo()
  with reductions_as_dots.column_sums():
    got, dots_hlo = grads_and_hlo()
  # LayerNorm's scale and bias and both Dense biases (512 rows each) become dots; the position's
  # sum over the batch (4 rows, under min_rows) stays a reduction
  assert dots_hlo.count("dot_general") == hlo.count("dot_general") + 4
  assert grads_and_hlo()[1] == hlo  # jax's rules restored
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_column_sums_as_rows_give_jax_s_gradients_through_2d_sums():
  model = nn.Dense(6)
  x = jax.random.normal(jax.random.key(0), (4, 128, 8))
  params = model.init(jax.random.key(1), x)

  def grads_and_hlo():
    loss = lambda p: jnp.sum(jnp.sin(model.apply(p, x)))  # noqa: E731
    return jax.grad(loss)(params), jax.jit(jax.grad(loss)).lower(params).as_text()

  expected, hlo = grads_and_hlo()
  with reductions_as_dots.column_sums(as_rows=True):
    got, rows_hlo = grads_and_hlo()
  # the bias's sum over 512 rows: of the gradient flattened to (512, 6), behind a barrier
  assert "optimization_barrier" in rows_hlo and "optimization_barrier" not in hlo
  assert "tensor<512x6xf32>" in rows_hlo
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
