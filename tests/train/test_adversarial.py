"""The adversarial paradigm: each network's update leaves the other's parameters alone, R1 against
a finite difference, the losses against their formulas, n_critic and the generator average, data
checks, and a diverging run stopping with the spine's error."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import gan
from tests.conftest import load_experiment
from train import checkpoint, loop
from train import config as config_lib
from train.paradigms import adversarial as adv


def _config(**adversarial):
  c = config_lib.base("adversarial")
  c.data.source = "digits"
  c.data.normalize = "unit"
  c.model = dict(name="gan.GAN", data_shape=(8, 8, 1), latent_dim=8, num_classes=10,
                 g_features=(8, 4), d_features=(4, 8), output="sigmoid",
                 spectral_norm="discriminator")
  c.adversarial.r1_gamma = 1.0
  c.adversarial.update(adversarial)
  return c


def _batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"inputs": jnp.asarray(rng.random((b, 8, 8, 1)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, b), jnp.int32),
          "mask": jnp.ones((b,), jnp.float32)}


@pytest.fixture(scope="module")
def setup():
  config = _config()
  model = gan.GAN(**{k: v for k, v in config.model.items() if k != "name"})
  paradigm = adv.make(model, config, total_steps=10)
  tx_g, _ = adv.optim.make(config.optim, 10)
  tx_d, _ = adv.optim.make(adv._d_optim(config), 10)
  return model, config, paradigm, adv.updates(model, config, tx_g, tx_d)


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def test_discriminator_update_leaves_the_generator_alone_and_vice_versa(setup):
  model, _, paradigm, upd = setup
  batch = _batch()
  state = jax.jit(paradigm.init)(jax.random.key(0), batch)
  p, opt_d, ms, metrics = jax.jit(upd.discriminator)(
      state.params, state.opt_state["discriminator"], state.model_state, batch["inputs"],
      batch["label"], batch["mask"], jax.random.key(1))
  assert _same(p["generator"], state.params["generator"])
  assert not _same(p["discriminator"], state.params["discriminator"])
  assert float(metrics["r1"]) > 0
  p2, opt_g, _, _ = jax.jit(upd.generator, static_argnums=4)(
      p, state.opt_state["generator"], ms, batch["label"], 8, jax.random.key(2))
  assert _same(p2["discriminator"], p["discriminator"])
  assert not _same(p2["generator"], p["generator"])


def test_r1_penalty_equals_a_finite_difference_of_the_discriminator():
  with jax.enable_x64(True):
    model = gan.GAN(data_shape=(4, 4, 1), latent_dim=4, num_classes=3, g_features=(4,),
                    d_features=(3, 5), dtype=jnp.float64, param_dtype=jnp.float64)
    labels = jnp.array([0, 2])
    # jitted: op-by-op, the init and the penalty's gradient take seconds of dispatch
    variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((2, 4), jnp.float64), labels)
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 1), jnp.float64)
    got = np.asarray(jax.jit(lambda v, x: adv.r1_penalty(model, v, x, labels))(variables, x))

    discriminate = jax.jit(lambda v: model.apply(variables, v, labels,
                                                 method=model.discriminate))

    def d(v):
      return np.asarray(discriminate(v), np.float64)

    h, grad = 1e-5, np.zeros((2, 16))
    flat = np.asarray(x).reshape(2, 16)
    for j in range(16):
      e = np.zeros_like(flat)
      e[:, j] = h
      grad[:, j] = (d((flat + e).reshape(x.shape)) - d((flat - e).reshape(x.shape))) / (2 * h)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, np.square(grad).sum(1), rtol=1e-7)


def test_losses_match_their_formulas():
  real, fake = np.array([-2.0, 0.3, 4.0]), np.array([1.5, -0.2, -3.0])
  softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
  for name, want_r, want_f, want_g in (
      ("non_saturating", softplus(-real), softplus(fake), softplus(-fake)),
      ("hinge", np.maximum(0, 1 - real), np.maximum(0, 1 + fake), -fake)):
    r, f = adv.d_losses(jnp.asarray(real), jnp.asarray(fake), name)
    np.testing.assert_allclose(r, want_r, rtol=1e-6)
    np.testing.assert_allclose(f, want_f, rtol=1e-6)
    np.testing.assert_allclose(adv.g_loss(jnp.asarray(fake), name), want_g, rtol=1e-6)


def test_n_critic_updates_and_generator_average():
  config = _config(n_critic=2, ema_decay=0.99)
  model = gan.GAN(**{k: v for k, v in config.model.items() if k != "name"})
  paradigm = adv.make(model, config, total_steps=10)
  batch = _batch()
  state0 = jax.jit(paradigm.init)(jax.random.key(0), batch)
  step = jax.jit(paradigm.train_step)
  state1, metrics = step(state0, batch, jax.random.key(1))
  state3, _ = step(*step(state1, batch, jax.random.key(1))[:1], batch, jax.random.key(1))
  adam_count = lambda s: int(s[0].count)  # noqa: E731  (chain: scale_by_adam, then the lr)
  assert adam_count(state3.opt_state["discriminator"]) == 6
  assert adam_count(state3.opt_state["generator"]) == 3
  # the first average weight is min(0.99, 1/10): ema = 0.1 * init + 0.9 * new
  want = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, state0.ema_params,
                      state1.params["generator"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state1.ema_params, want)
  assert {"loss", "d_loss", "g_loss", "r1", "d_real", "d_fake"} <= set(metrics)
  np.testing.assert_allclose(metrics["loss"], metrics["d_loss"] + metrics["g_loss"], rtol=1e-6)


@pytest.mark.parametrize("change,error,match", [
    ({"model.name": "mlp.MLP"}, config_lib.ConfigError, "lacks generate"),
    ({"data.normalize": "global"}, config_lib.ConfigError, "model.output='sigmoid'"),
    ({"data.batch_size": 99, "adversarial.n_critic": 2}, config_lib.ConfigError,
     r"data.batch_size=99 with adversarial.n_critic=2"),
    ({"model.data_shape": (8, 8)}, ValueError, r"shape \(8, 8, 1\); model.data_shape=\(8, 8\)"),
    ({"model.num_classes": 5}, ValueError, r"model.num_classes=5 .*split 'train'"),
    ({"optim.grad_accum_steps": 2}, config_lib.ConfigError, "optim.grad_accum_steps=2"),
])
def test_bad_data_and_config_are_refused_before_compute(data_dir, change, error, match):
  import arch

  c = _config()
  c.data.data_dir = data_dir
  for key, value in change.items():
    section, field = key.split(".")
    if section == "model":
      c.model[field] = value
    else:
      c[section][field] = value
  model = arch.build(dict(name="mlp.MLP", num_classes=10) if c.model.name == "mlp.MLP"
                     else c.model)
  with pytest.raises(error, match=match):
    adv.check_data(c, model)


def test_diverging_run_stops_with_the_spines_error_and_keeps_the_last_checkpoint(
    data_dir, tmp_path):
  wd = str(tmp_path / "nan")
  c = load_experiment("digits_dcgan", "tiny", data_dir)
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 30, 5, 10
  # the learning rates jump by 1e30 at step 15: the discriminator's logits overflow
  c.optim.schedule, c.optim.step_boundaries, c.optim.step_factor = "step", (0.5,), 1e30
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 1[6-9].*last good checkpoint is "
                     r"step 10"):
    loop.train_and_evaluate(c, wd)
  assert sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))) == [10]
  tree, step = checkpoint.load_state_tree(os.path.join(wd, "checkpoints"))
  assert step == 10 and all(np.isfinite(np.asarray(v)).all()
                            for v in jax.tree.leaves(tree["params"]))


@pytest.mark.slow  # 13 s; the default suite's budget (docs/testing.md)
def test_sample_grids_are_written_at_every_evaluation(trained):
  workdir = trained("digits_cgan")  # tiny: 20 steps, evaluated at 10 and 20
  files = sorted(os.listdir(os.path.join(workdir, "samples")))
  assert files == ["final.png", "step_00000010.png", "step_00000020.png"]
  assert all(os.path.getsize(os.path.join(workdir, "samples", f)) > 1000 for f in files)


def test_grid_latents_are_fixed_and_give_one_class_per_column():
  model = gan.GAN(data_shape=(8, 8, 1), latent_dim=4, num_classes=10)
  z1, labels = adv.grid_latents(model, 30, seed=3)
  z2, _ = adv.grid_latents(model, 30, seed=3)
  np.testing.assert_array_equal(z1, z2)
  np.testing.assert_array_equal(np.asarray(labels).reshape(3, 10), np.tile(np.arange(10), (3, 1)))
