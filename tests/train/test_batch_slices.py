"""train.xla_cpu_batch_slices: the supervised training pass over independent slices of the batch
on a one-CPU mesh gives the step of one pass (within float rounding), draws each slice's dropout
from its own key, and refuses what it cannot slice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_experiment
from train import batch_slices, loop
from train import config as config_lib
from train.errors import ConfigError


def _two_steps(config):
  run = loop.build(config)
  state = run.init_state()
  batch = run.example
  state, first = run.train_step(state, batch, run.step_rng)
  state, second = run.train_step(state, batch, run.step_rng)
  dots = run.train_step.lower(state, batch, run.step_rng).as_text().count("dot_general")
  return state.params, np.asarray(first), np.asarray(second), dots


def test_the_sliced_step_is_the_step_of_one_pass(data_dir):
  config = load_experiment("charlm_transformer", "tiny", data_dir)
  config.train.xla_cpu_batch_slices = 1
  params, first, second, dots = _two_steps(config)
  config.train.xla_cpu_batch_slices = 2
  s_params, s_first, s_second, s_dots = _two_steps(config)
  assert s_dots == 2 * dots  # the pass's dots once a slice: the slices are real
  np.testing.assert_allclose(s_first, first, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s_second, second, rtol=1e-5, atol=1e-6)
  for (path, a), b in zip(jax.tree.leaves_with_path(s_params), jax.tree.leaves(params)):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      # softmax ignores a bias added to every key, so this gradient is rounding noise, which
      # Adam scales to a step of either sign: both runs keep it near its zero start
      assert np.abs(a).max() < 1e-5 and np.abs(b).max() < 1e-5, name
      continue
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_experiment_that_sets_it_slices_its_training_pass_on_one_cpu_alone(data_dir):
  from train import parallel

  config = load_experiment("charlm_transformer", None, data_dir)
  assert config.train.xla_cpu_batch_slices == 2
  assert batch_slices.of_mesh(config, parallel.make_mesh(config.mesh)) == 2
  several = jax.sharding.Mesh(np.array(jax.devices()[:1] * 2), ("data",))  # two "devices"
  assert batch_slices.of_mesh(config, several) == 1


def test_each_slice_draws_its_own_dropout_and_outputs_concatenate_in_order():
  rng = jax.random.key(3)
  x = jnp.arange(8.0)[:, None] * jnp.ones((8, 5))

  def fn(batched, key):
    inputs, none = batched
    assert none is None
    return {"x": inputs, "mask": jax.random.bernoulli(key, 0.5, inputs.shape)}
  out = batch_slices.sliced(fn, 4, (x, None), rng)
  np.testing.assert_array_equal(out["x"], x)
  for i in range(4):
    want = jax.random.bernoulli(jax.random.fold_in(rng, i), 0.5, (2, 5))
    np.testing.assert_array_equal(out["mask"][2 * i:2 * (i + 1)], want)
  whole = batch_slices.sliced(fn, 1, (x, None), rng)  # one slice: fn as given
  np.testing.assert_array_equal(whole["mask"], jax.random.bernoulli(rng, 0.5, x.shape))


def test_what_cannot_be_sliced_is_refused_in_one_line():
  with pytest.raises(ConfigError, match=r"updates \['batch_stats'\] in training; expected 1"):
    batch_slices.sliced(lambda b, r: b, 2, (jnp.ones((4, 2)), None), None, ["batch_stats"])
  base = config_lib.base()
  for slices, batch, paradigm, message in [
      (0, 32, "supervised", "train.xla_cpu_batch_slices=0; expected a count >= 1"),
      (3, 32, "supervised", "train.xla_cpu_batch_slices=3 with data.batch_size=32; expected a "
       "count that divides"),
      (2, 32, "diffusion", "train.xla_cpu_batch_slices=2 with paradigm 'diffusion'; the "
       "supervised"),
  ]:
    c = config_lib.base()
    c.paradigm = paradigm
    c.data.batch_size = batch
    c.train.xla_cpu_batch_slices = slices
    with pytest.raises(ConfigError, match=message) as err:
      config_lib.validate(c)
    assert "\n" not in str(err.value)
  config_lib.validate(base)  # the default, 1, passes
