"""arch/unet.py: shapes in 1-D and 2-D, the zero start, dependence on time and class, the null
class, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import unet


def _perturbed(variables, seed=1):
  """Every parameter moved off its initial value (the zero-initialised layers included)."""
  rng = np.random.default_rng(seed)  # NumPy: eager jax.random would compile once per shape
  return {"params": jax.tree.map(
      lambda p: np.asarray(p) + 0.1 * rng.standard_normal(p.shape, np.float32),
      variables["params"])}


@pytest.mark.parametrize("kwargs", [
    dict(data_shape=(8, 8, 1), channels=8, channel_mults=(1, 2), num_res_blocks=1,
         attention_levels=(1,), groups=4),
    dict(data_shape=(40,), ndim=1, channels=8, channel_mults=(1, 2, 2), num_res_blocks=1,
         attention_levels=(2,), groups=4, num_classes=10),
])
def test_shapes_zero_start_and_dependence_on_time_and_class(kwargs):
  model = arch.build(dict(name="unet.UNet", **kwargs))
  x = jax.random.normal(jax.random.key(0), (3,) + model.data_shape)
  t = jnp.array([0, 10, 999])
  labels = jnp.array([0, 5, model.num_classes]) if model.num_classes else None  # incl. null
  # compiled once each, without backend optimisation (a third of the compile time; the checks
  # below are about structure, not speed)
  fast = {"xla_backend_optimization_level": 0}
  variables = jax.jit(model.init).lower(jax.random.key(0), x, t, labels).compile(fast)(
      jax.random.key(0), x, t, labels)
  apply = jax.jit(model.apply).lower(variables, x, t, labels).compile(fast)
  out = apply(variables, x, t, labels)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)  # the output convolution starts at zero
  v = _perturbed(variables)
  out = apply(v, x, t, labels)
  assert np.isfinite(out).all()
  other_t = apply(v, x, t + 1, labels)
  assert not np.allclose(out, other_t)
  if model.num_classes:
    other_label = apply(v, x, t, (labels + 1) % (model.num_classes + 1))
    assert not np.allclose(out, other_label)
  # examples do not mix (GroupNorm normalises within an example): other inputs beside the first
  # leave its output alone (same batch shape, so no second compile)
  others = x.at[1:].set(np.random.default_rng(2).standard_normal(x[1:].shape, np.float32))
  np.testing.assert_allclose(apply(v, others, t, labels)[:1], out[:1], rtol=1e-4, atol=1e-5)


def test_parameter_count():
  model = unet.UNet(data_shape=(8, 8, 1), channels=8, channel_mults=(1, 2), num_res_blocks=1,
                    groups=4)
  count = unet.parameter_count(model)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                             jnp.zeros((1,), jnp.int32))
  assert count == sum(p.size for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("kwargs,call,match", [
    (dict(data_shape=(6, 6, 1), channel_mults=(1, 2, 2)), {}, "divisible by 4"),
    (dict(data_shape=(8, 8, 1), channels=12), {}, "not divisible by model.groups=8"),
    (dict(data_shape=(8, 8, 1), num_classes=10), {"labels": None},
     r"conditional UNet: expected labels of shape \(2,\)"),
    (dict(data_shape=(8, 8, 1)), {"t": jnp.zeros((3,), jnp.int32)},
     r"timesteps of shape \(3,\); expected \(2,\)"),
    (dict(data_shape=(8, 8, 1)), {"x": jnp.zeros((2, 8, 8))},
     r"inputs of shape \(2, 8, 8\); expected \(B, 8, 8, 1\)"),
])
def test_errors_name_the_field(kwargs, call, match):
  model = unet.UNet(**kwargs)
  args = {"x": jnp.zeros((2,) + tuple(model.data_shape)), "t": jnp.zeros((2,), jnp.int32),
          "labels": jnp.zeros((2,), jnp.int32) if model.num_classes else None}
  args.update(call)
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), args["x"], args["t"], args["labels"])


def test_upsample_is_resize_nearest():
  """`arch.unet.upsample` (a broadcast and a reshape) gives `jax.image.resize`'s nearest values,
  for 1-D signals and 2-D images."""
  for shape in ((2, 5, 3), (2, 3, 4, 5)):
    h = jax.random.normal(jax.random.key(len(shape)), shape)
    size = (shape[0], *(2 * n for n in shape[1:-1]), shape[-1])
    np.testing.assert_array_equal(unet.upsample(h), jax.image.resize(h, size, "nearest"))
