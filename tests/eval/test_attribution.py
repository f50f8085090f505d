"""eval.attribution: closed forms on linear and quadratic functions, a finite-difference check
of the gradient, and completeness of integrated gradients on trained classifiers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import attribution as at


def test_closed_forms_of_a_linear_and_a_quadratic_function():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)      # 3 classes, 7 inputs
  x = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
  target = jnp.array([0, 1, 2, 1, 0])
  linear = lambda x, t: jnp.sum(x * w[t], -1) + 0.3         # noqa: E731
  np.testing.assert_allclose(at.gradient(linear, x, target), w[target], rtol=1e-6)
  np.testing.assert_allclose(at.gradient_x_input(linear, x, target), x * w[target], rtol=1e-6)
  np.testing.assert_allclose(at.integrated_gradients(linear, x, target, steps=3),
                             x * w[target], rtol=1e-5)
  np.testing.assert_allclose(at.smoothgrad(linear, x, target, jax.random.key(0), 4),
                             w[target], rtol=1e-5)
  base = jnp.ones(7)
  np.testing.assert_allclose(at.integrated_gradients(linear, x, target, base, steps=2),
                             (x - base) * w[target], rtol=1e-5, atol=1e-6)
  # f = sum x^2: the path integral of 2 a x is x, so IG = x^2 (the trapezoid is exact here)
  quadratic = lambda x, t: jnp.sum(x ** 2, -1)               # noqa: E731
  ig = at.integrated_gradients(quadratic, x, target, steps=1)
  np.testing.assert_allclose(ig, x ** 2, rtol=1e-5)
  np.testing.assert_allclose(at.completeness_gap(quadratic, x, target, ig), 0.0, atol=1e-5)
  assert np.all(at.completeness_gap(quadratic, x, target, 2 * ig) > 0.99)


@pytest.fixture(scope="module")
def cnn(trained):
  """The tiny-trained MNIST-1D CNN as f(x, target), with a few evaluation inputs."""
  import ml_collections as mlc

  from data import split_arrays
  from train import checkpoint

  model, tree, config, _ = checkpoint.load_workdir(trained("mnist1d_cnn"))
  f = at.classifier_logit(model, {"params": tree["params"], **(tree.get("model_state") or {})})
  x, y, _ = split_arrays(mlc.ConfigDict(config).data, "test", config["seed"])
  return jax.jit(f), jnp.asarray(x[:8], jnp.float32), jnp.asarray(y[:8])


def test_gradient_matches_finite_differences_on_a_trained_cnn(cnn):
  f, x, y = cnn
  g = np.asarray(at.gradient(f, x, y), np.float64)
  d = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
  h = 1e-2
  fd = (np.asarray(f(x + h * d, y), np.float64) - np.asarray(f(x - h * d, y), np.float64)) / (2 * h)
  np.testing.assert_allclose((g * d).reshape(len(x), -1).sum(-1), fd, rtol=0.02, atol=1e-3)


@pytest.mark.slow
def test_integrated_gradients_are_complete_within_one_percent(cnn, trained):
  f, x, y = cnn
  fixed = at.completeness_gap(f, x, y, at.integrated_gradients(f, x, y, steps=16))
  assert fixed.max() > 0.01   # too few intervals for a ReLU network, so refinement has work
  ig = at.integrated_gradients(f, x, y, steps=16, tolerance=0.01)
  gap = at.completeness_gap(f, x, y, ig)
  assert gap.max() < 0.01, gap
  # doubling reuses the coarse grid's gradients: 16 refined twice is the 64-interval rule
  twice = at.integrated_gradients(f, x, y, steps=16, tolerance=1e-9, max_steps=64)
  np.testing.assert_allclose(twice, at.integrated_gradients(f, x, y, steps=64), rtol=1e-4,
                             atol=1e-6)
  # and on a 2-D image classifier
  import ml_collections as mlc

  from data import split_arrays
  from train import checkpoint

  model, tree, config, _ = checkpoint.load_workdir(trained("digits_cnn"))
  g = jax.jit(at.classifier_logit(model, {"params": tree["params"],
                                          **(tree.get("model_state") or {})}))
  xi, yi, _ = split_arrays(mlc.ConfigDict(config).data, "test", config["seed"])
  xi, yi = jnp.asarray(xi[:8], jnp.float32), jnp.asarray(yi[:8])
  ig = at.integrated_gradients(g, xi, yi, tolerance=0.01)
  assert at.completeness_gap(g, xi, yi, ig).max() < 0.01


def test_figure_and_errors(cnn, tmp_path):
  f, x, y = cnn
  maps = at.attribute(f, x[:3], y[:3], steps=8, samples=4)
  assert set(maps) == set(at.METHODS) and all(m.shape == x[:3].shape for m in maps.values())
  path = at.plot(np.asarray(x[:3]), {k: np.asarray(v) for k, v in maps.items()},
                 str(tmp_path / "a.png"), titles=["a", "b", "c"], title="t")
  assert os.path.getsize(path) > 10000
  with pytest.raises(ValueError, match="inputs of dtype int32: .* must be floating point"):
    at.gradient(f, jnp.zeros((2, 40), jnp.int32), y[:2])
  with pytest.raises(ValueError, match="steps=0, max_steps=4096; expected 1 <= steps"):
    at.integrated_gradients(f, x, y, steps=0)
  with pytest.raises(ValueError, match="samples=0"):
    at.smoothgrad(f, x, y, jax.random.key(0), samples=0)
