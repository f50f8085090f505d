"""Diffusion math against closed forms: the forward process iterated step by step, the posterior
from Bayes' rule in float64, the DDIM sampler's determinism, and both samplers driven by the exact
optimal denoiser of a Gaussian data set reproducing its mean and covariance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.paradigms import diffusion as dif
from train.paradigms import diffusion_math as dm


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_q_equals_iterating_the_forward_process(kind):
  s = dm.make_schedule(kind, 100)
  betas = np.asarray(s.betas, np.float64)
  # moments of x_t given x_0 = 1 by the recursion x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e
  mean, var = 1.0, 0.0
  means, variances = [], []
  for b in betas:
    mean, var = math.sqrt(1 - b) * mean, (1 - b) * var + b
    means.append(mean)
    variances.append(var)
  ab = np.asarray(s.alpha_bars, np.float64)
  np.testing.assert_allclose(means, np.sqrt(ab), rtol=1e-5)
  np.testing.assert_allclose(variances, 1 - ab, rtol=1e-5, atol=1e-7)
  # and by simulation: 20,000 chains to t = 60 against q_sample's distribution
  rng = np.random.default_rng(0)
  n, t = 20_000, 60
  x0 = rng.normal(size=(n, 1))
  x = x0.copy()
  for b in betas[:t + 1]:
    x = math.sqrt(1 - b) * x + math.sqrt(b) * rng.normal(size=x.shape)
  direct = np.asarray(dm.q_sample(s, jnp.asarray(x0, jnp.float32), jnp.full((n,), t),
                                   jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)))
  resid_iter, resid_direct = x - np.sqrt(ab[t]) * x0, direct - np.sqrt(ab[t]) * x0
  for r in (resid_iter, resid_direct):
    assert abs(r.mean()) < 4 * math.sqrt((1 - ab[t]) / n)
    assert abs(r.var() / (1 - ab[t]) - 1) < 4 * math.sqrt(2 / n)


def test_cosine_schedule_matches_its_formula():
  s = dm.make_schedule("cosine", 1000)
  t = np.arange(1, 1001) / 1000
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
  want = np.clip(f(t) / f(0), 0, None)
  np.testing.assert_allclose(np.asarray(s.alpha_bars)[:990], want[:990], rtol=2e-4, atol=1e-6)
  lin = dm.make_schedule("linear", 1000)
  np.testing.assert_allclose([lin.betas[0], lin.betas[-1]], [1e-4, 0.02], rtol=1e-6)
  with pytest.raises(ValueError, match="diffusion.schedule='quadratic'"):
    dm.make_schedule("quadratic", 10)


def test_posterior_matches_bayes_rule_in_float64():
  s = dm.make_schedule("linear", 50)
  rng = np.random.default_rng(1)
  t = np.array([1, 7, 30, 49])
  x0, xt = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  mean, var = dm.posterior(s, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32),
                            jnp.asarray(t))
  b = np.asarray(s.betas, np.float64)
  ab = np.cumprod(1 - b)
  ab_prev = np.concatenate([[1.0], ab[:-1]])
  # prior x_{t-1} | x_0 ~ N(sqrt(ab_prev) x_0, 1 - ab_prev); likelihood x_t | x_{t-1} ~
  # N(sqrt(alpha_t) x_{t-1}, beta_t): the product of the two Gaussians
  precision = 1 / (1 - ab_prev[t]) + (1 - b[t]) / b[t]
  want_var = 1 / precision
  want_mean = want_var[:, None] * (np.sqrt(ab_prev[t])[:, None] * x0 / (1 - ab_prev[t])[:, None]
                                   + np.sqrt(1 - b[t])[:, None] * xt / b[t][:, None])
  np.testing.assert_allclose(np.asarray(var).reshape(-1), want_var, rtol=1e-4)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_targets_round_trip_to_x0_and_noise(prediction):
  rng = np.random.default_rng(2)
  x0, noise = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  ab = rng.uniform(0.01, 0.99, size=(5, 1))
  xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
  out = dm.target(prediction, x0, noise, ab)
  got_x0, got_eps = dm.split_prediction(prediction, out, xt, ab)
  np.testing.assert_allclose(got_x0, x0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got_eps, noise, rtol=1e-6, atol=1e-6)


def test_min_snr_weights():
  s = dm.make_schedule("cosine", 100)
  t = jnp.arange(100)
  r = np.asarray(dm.snr(s))
  np.testing.assert_allclose(dm.loss_weight(s, t, "eps", "min_snr"), np.minimum(r, 5) / r,
                             rtol=1e-6)
  np.testing.assert_allclose(dm.loss_weight(s, t, "v", "min_snr"), np.minimum(r, 5) / (r + 1),
                             rtol=1e-6)
  np.testing.assert_array_equal(dm.loss_weight(s, t, "eps", "simple"), np.ones(100))


MEAN = np.array([1.5, -0.5])
COV = np.array([[0.6, 0.3], [0.3, 0.4]])


@pytest.fixture(scope="module")
def gaussian_samples():
  """20,000 samples each from DDPM and DDIM (all 1,000 steps, and 50 of them; eta = 0) of the
  cosine schedule, driven by the exact denoiser of N(MEAN, COV), for eps and v predictions."""
  s = dm.make_schedule("cosine", 1000)
  n = 20_000
  x_T = jax.random.normal(jax.random.key(0), (n, 2))
  out = {}
  for prediction in ("eps", "v"):
    denoise = dm.gaussian_optimal_denoiser(s, MEAN, COV, prediction)
    out["ddpm", prediction] = np.asarray(jax.jit(
        lambda x, k: dm.ddpm_sample(s, denoise, prediction, x, k))(x_T, jax.random.key(1)))
    for steps in (1000, 50):
      out[f"ddim{steps}", prediction] = np.asarray(jax.jit(
          lambda x, k: dm.ddim_sample(s, denoise, prediction, x, k, steps=steps))(
              x_T, jax.random.key(1)))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ddpm", "ddim1000"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_samplers_with_the_optimal_denoiser_reproduce_the_data_moments(gaussian_samples, sampler,
                                                                      prediction):
  x = gaussian_samples[sampler, prediction]
  n = len(x)
  se_mean = np.sqrt(np.diag(COV) / n)
  assert np.all(np.abs(x.mean(0) - MEAN) < 4 * se_mean), (x.mean(0), MEAN)
  # standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
  se_cov = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV ** 2) / n)
  assert np.all(np.abs(np.cov(x.T) - COV) < 4 * se_cov), (np.cov(x.T), COV)


@pytest.mark.slow
def test_ddim_with_50_steps_has_a_small_discretisation_error(gaussian_samples):
  """50 DDIM steps shrink the covariance by about 5% here (measured with 100,000 samples: 0.571
  for 0.6): a discretisation error of the probability-flow ODE, not sampling noise."""
  for prediction in ("eps", "v"):
    x = gaussian_samples["ddim50", prediction]
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), COV, rtol=0.08)


def test_ddim_with_eta_zero_is_deterministic():
  s = dm.make_schedule("cosine", 100)
  denoise = dm.gaussian_optimal_denoiser(s, MEAN, COV)
  x_T = jax.random.normal(jax.random.key(0), (16, 2))
  run = lambda key, eta: np.asarray(dm.ddim_sample(s, denoise, "eps", x_T, key, 20, eta))  # noqa: E731
  np.testing.assert_array_equal(run(jax.random.key(1), 0.0), run(jax.random.key(2), 0.0))
  assert not np.allclose(run(jax.random.key(1), 1.0), run(jax.random.key(2), 1.0))
  with pytest.raises(ValueError, match=r"diffusion.sample_steps=101; expected 1..100"):
    dm.ddim_timesteps(100, 101)


def test_guidance_interpolates_conditional_and_unconditional_outputs():
  def model(x, t, labels):  # a toy conditional output: depends on the label
    return x + labels[:, None].astype(jnp.float32)

  x, t = jnp.ones((3, 2)), jnp.zeros((3,), jnp.int32)
  labels = jnp.array([1, 2, 3])
  cond, uncond = model(x, t, labels), model(x, t, jnp.full((3,), 10))
  for scale in (0.0, 1.0, 3.0):
    got = dm.guided(model, labels, null_label=10, scale=scale)(x, t)
    np.testing.assert_allclose(got, uncond + scale * (cond - uncond), rtol=1e-6)


# The paradigm over arch.unet.UNet.

def _config(**diffusion):
  from train import config as config_lib

  c = config_lib.base("diffusion")
  c.data.source = "digits"
  c.data.normalize = "global"
  c.model = dict(name="unet.UNet", data_shape=(8, 8, 1), channels=8, channel_mults=(1, 2),
                 num_res_blocks=1, attention_levels=(1,), groups=4, num_classes=10)
  c.diffusion.update(dict(steps=50, sample_steps=5, label_dropout=0.2))
  c.diffusion.update(diffusion)
  return c


@pytest.mark.parametrize("change,error,match", [
    ({"model.name": "mlp.MLP"}, "ConfigError", "lacks data_shape"),
    ({"model.num_classes": 0}, "ConfigError", r"diffusion.label_dropout=0.2 .* expected "
     r"model.num_classes > 0"),
    ({"model.data_shape": (8, 8)}, "DataError", r"shape \(8, 8, 1\); model.data_shape=\(8, 8\)"),
    ({"model.num_classes": 5}, "DataError", r"model.num_classes=5 .*split 'train'"),
])
def test_bad_data_and_config_are_refused_before_compute(data_dir, change, error, match):
  import arch
  import data as data_lib
  from train import config as config_lib

  c = _config()
  c.data.data_dir = data_dir
  for key, value in change.items():
    section, field = key.split(".")
    (c.model if section == "model" else c[section])[field] = value
  model = arch.build(dict(name="mlp.MLP", num_classes=10) if c.model.name == "mlp.MLP"
                     else c.model)
  errors = {"ConfigError": config_lib.ConfigError, "DataError": data_lib.DataError}
  with pytest.raises(errors[error], match=match):
    dif.check_data(c, model)


@pytest.mark.slow
def test_train_step_averages_parameters_and_guided_sampling_runs():
  import arch

  c = _config(ema_decay=0.99, guidance_scale=2.0)
  model = arch.build(c.model)
  paradigm = dif.make(model, c, total_steps=10)
  rng = np.random.default_rng(0)
  batch = {"inputs": jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
           "mask": jnp.ones((8,), jnp.float32)}
  state0 = jax.jit(paradigm.init)(jax.random.key(0), batch)
  state1, metrics = jax.jit(paradigm.train_step)(state0, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  want = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, state0.ema_params, state1.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state1.ema_params, want)
  # an untrained UNet outputs 0: with eps = 0, DDIM's x0 estimate is x_t / sqrt(abar) at
  # every step, so the samples are the start noise divided by sqrt(abar_T) (cosine, T = 50)
  z = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
  out = paradigm.generate(state0, z, jnp.arange(4))
  ab_T = float(dm.make_schedule("cosine", 50).alpha_bars[-1])
  np.testing.assert_allclose(out, z / np.sqrt(ab_T), rtol=1e-4)
  sums = jax.jit(paradigm.eval_step)(state1, batch, jax.random.key(3))
  assert float(sums["count"]) == 8 and np.isfinite(float(sums["loss_sum"]))


@pytest.mark.slow
def test_generate_draws_its_step_noise_from_rng():
  import arch

  c = _config(eta=1.0, sample_steps=5)
  model = arch.build(c.model)
  paradigm = dif.make(model, c, total_steps=10)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
  batch = {"inputs": x, "label": jnp.arange(4), "mask": jnp.ones((4,), jnp.float32)}
  state = jax.jit(paradigm.init)(jax.random.key(0), batch)
  z, y = jax.random.normal(jax.random.key(2), x.shape), jnp.arange(4)
  a = paradigm.generate(state, z, y, jax.random.key(5))
  np.testing.assert_array_equal(a, paradigm.generate(state, z, y, jax.random.key(5)))
  assert not np.allclose(a, paradigm.generate(state, z, y, jax.random.key(6)))
