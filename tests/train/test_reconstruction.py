"""The reconstruction paradigm: its densities against SciPy, the KL against Monte Carlo, the
IWAE bound against the ELBO on a trained VAE, and its runs through the spine's loop."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from scipy import stats

import arch
import data as data_lib
from eval import reconstruction as eval_rec
from tests.conftest import load_experiment
from train import checkpoint, loop
from train import config as config_lib
from train.paradigms import reconstruction as rec


def test_analytic_kl_equals_a_monte_carlo_estimate():
  rng = np.random.default_rng(0)
  mean, logvar = rng.normal(size=(4, 3)), rng.normal(scale=0.7, size=(4, 3))
  n = 200_000
  z = mean + np.exp(0.5 * logvar) * rng.standard_normal((n, 4, 3))
  log_q = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
  log_p = stats.norm.logpdf(z).sum(-1)
  samples = log_q - log_p                                   # (n, 4): KL = E_q[log q - log p]
  mc, se = samples.mean(0), samples.std(0) / np.sqrt(n)
  analytic = np.asarray(rec.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
  assert np.all(np.abs(analytic - mc) < 4 * se), (analytic, mc, se)


def test_log_densities_match_scipy():
  rng = np.random.default_rng(1)
  x = (rng.random((3, 5, 2)) < 0.4).astype(np.float32)
  logits = rng.normal(size=(3, 5, 2)).astype(np.float32)
  want = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits.astype(np.float64)))).sum((1, 2))
  np.testing.assert_allclose(rec.log_likelihood(x, logits, "bernoulli"), want, rtol=1e-5)
  y, mu = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
  std = rng.uniform(0.2, 2.0, size=(7,))
  np.testing.assert_allclose(rec.log_likelihood(y, mu, "gaussian", std),
                             stats.norm.logpdf(y, mu, std).sum(1), rtol=1e-5)
  logvar = rng.normal(size=(3, 7))
  want = [stats.multivariate_normal.logpdf(y[i], mu[i], np.diag(np.exp(logvar[i])))
          for i in range(3)]
  np.testing.assert_allclose(rec.gaussian_log_density(y, mu, logvar), want, rtol=1e-5)


@pytest.fixture(scope="module")
def vae(trained, data_dir):
  """A digits VAE trained for 800 steps: (workdir, eval_reconstruction.Trained, test inputs)."""
  workdir = trained("digits_vae", steps=800)
  model, tree, config, _ = checkpoint.load_workdir(workdir)
  x, _, _ = data_lib.split_arrays(mlc.ConfigDict(config).data, "test", config["seed"])
  return workdir, model, {"params": tree["params"]}, jnp.asarray(x)


@pytest.mark.slow
def test_iwae_bound_is_tighter_than_the_elbo_on_a_trained_vae(vae):
  workdir, model, variables, x = vae
  with open(os.path.join(workdir, "summary.json")) as f:
    final = json.load(f)["final_eval"]
  assert final["neg_iwae"] < final["neg_elbo"]              # the loop's own evaluation
  key = jax.random.key(7)
  elbo = rec.elbo_terms(model, variables, x, key, 50)["neg_elbo"]
  one = rec.iwae_bound(model, variables, x, jax.random.fold_in(key, 1), 1)
  many = rec.iwae_bound(model, variables, x, jax.random.fold_in(key, 2), 200)
  # k = 1 is a one-sample ELBO: equal in expectation (paired differences within 4 SE).
  d = np.asarray(one - elbo)
  assert abs(d.mean()) < 4 * d.std() / np.sqrt(len(d)), (d.mean(), d.std())
  # k = 200 is tighter, by far more than the noise.
  d = np.asarray(elbo - many)
  assert d.mean() > 4 * d.std() / np.sqrt(len(d)) and d.mean() > 0.1, (d.mean(), d.std())


@pytest.mark.slow
def test_conv_autoencoder_beats_pca_with_as_many_components(trained, data_dir):
  workdir = trained("digits_ae", steps=1500)
  config = mlc.ConfigDict(checkpoint.read_config(workdir))
  assert config.model.encoder == "conv" and config.model.latent_dim == 8
  with open(os.path.join(workdir, "summary.json")) as f:
    model_mse = json.load(f)["final_eval"]["mse"]
  x_train, _, _ = data_lib.split_arrays(config.data, "train", config.seed)
  x_test, _, _ = data_lib.split_arrays(config.data, "test", config.seed)
  pca_mse = float(eval_rec.pca_errors(x_train, x_test, 8).mean())
  assert model_mse < 0.75 * pca_mse, (model_mse, pca_mse)


def test_kl_warmup_in_the_loop_metrics(trained):
  with open(os.path.join(trained("digits_vae"), "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  first = next(r for r in rows if r["split"] == "train")
  # Steps 1..10 of a 1,000-step warm-up to beta = 1: weights s / 1000, averaged over the window.
  assert first["step"] == 10 and first["kl_weight"] == pytest.approx(5.5e-3, rel=1e-6)
  assert 0 < first["loss"] - first["nll"] < 0.03 * first["kl"]  # loss = nll + weight * kl
  evals = [r for r in rows if r["split"] == "eval"]
  assert {"neg_elbo", "neg_iwae", "nll", "kl", "mse"} <= set(evals[-1])


def test_resume_retrains_the_lost_steps_bit_for_bit(trained, tmp_path, data_dir):
  source = trained("digits_vae")                   # tiny: 20 steps, checkpoints at 10 and 20
  final, step = checkpoint.load_state_tree(os.path.join(source, "checkpoints"))
  assert step == 20
  workdir = str(tmp_path / "resumed")
  shutil.copytree(source, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))
  loop.train_and_evaluate(load_experiment("digits_vae", "tiny", data_dir), workdir)
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["resumed_from"] == 10
  again, _ = checkpoint.load_state_tree(os.path.join(workdir, "checkpoints"))
  for a, b in zip(jax.tree.leaves(final["params"]), jax.tree.leaves(again["params"])):
    np.testing.assert_array_equal(a, b)


def test_a_model_that_is_not_an_autoencoder_is_refused(data_dir, tmp_path):
  c = load_experiment("digits_ae", "tiny", data_dir)
  c.model = load_experiment("digits_cnn", "tiny").model
  with pytest.raises(config_lib.ConfigError, match=r"model.name='cnn.CNN' \(CNN\) lacks encode "
                     r"\(x -> code\), decode .*which paradigm='reconstruction' calls"):
    loop.train_and_evaluate(c, str(tmp_path))
  c = load_experiment("digits_ae", "tiny", data_dir)
  c.data.seq_len = 16
  with pytest.raises(config_lib.ConfigError, match=r"data.seq_len=16 makes next-token windows; "
                     r"paradigm='reconstruction' trains on whole examples"):
    rec.check_data(c, arch.build(c.model))


@pytest.mark.parametrize("normalize,match", [
    ("global", r"model.likelihood='bernoulli' needs inputs in \[0, 1\]; with "
     r"data.source='digits', data.normalize='global' centres them: expected "
     r"data.normalize='unit'"),
    ("none", r"split 'train' spans \[0, 16\] with data.normalize='none': expected "
     r"data.normalize='unit'"),
])
def test_a_bernoulli_model_on_inputs_outside_0_1_is_refused(data_dir, tmp_path, normalize,
                                                             match):
  c = load_experiment("digits_vae", "tiny", data_dir)
  c.data.normalize, c.data.binarize = normalize, False
  with pytest.raises(config_lib.ConfigError, match=match):
    loop.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")
