"""Autoencoder, denoising autoencoder and VAE modules: shapes, methods, noise streams, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.autoencoder import VAE, Autoencoder, DenoisingAutoencoder

KEY = jax.random.key(0)
RNGS = {"params": KEY, "latent": KEY, "noise": KEY}


@pytest.mark.parametrize("cls,shape,kw", [
    (Autoencoder, (8, 8, 1), dict(encoder="conv", features=(8, 16))),
    (Autoencoder, (8, 8, 1), dict(encoder="dense", features=(32,))),
    (DenoisingAutoencoder, (40,), dict(encoder="conv", ndim=1, features=(8, 8, 8))),
    (VAE, (8, 8), dict(encoder="conv", features=(8,), likelihood="bernoulli")),
    (VAE, (40, 2), dict(encoder="conv", ndim=1, features=(8, 8))),
])
def test_shapes_and_methods(cls, shape, kw):
  model = cls(input_shape=shape, latent_dim=3, **kw)
  x = jax.random.normal(KEY, (5,) + shape)
  variables = model.init(RNGS, x)
  out = model.apply(variables, x, train=True, rngs=RNGS)
  assert out["output"].shape == x.shape and out["z"].shape == (5, 3)
  out = model.apply(variables, x, train=False, rngs=RNGS)
  code = model.apply(variables, x, method=model.encode)
  if cls is VAE:
    mean, logvar = code
    assert mean.shape == logvar.shape == (5, 3)
    assert ("std" in out) == (model.likelihood == "gaussian")
  else:
    np.testing.assert_allclose(code, out["z"], rtol=1e-6)
  decoded = model.apply(variables, out["z"], method=model.decode)
  np.testing.assert_allclose(decoded, out["output"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # 14 s; the default suite's budget (docs/testing.md)
def test_vae_samples_from_the_posterior():
  model = VAE(input_shape=(6,), latent_dim=2, features=(16,))
  x = jax.random.normal(KEY, (4, 6))
  variables = model.init(RNGS, x)
  mean, logvar = model.apply(variables, x, method=model.encode)
  zs = jnp.stack([model.apply(variables, x, rngs={"latent": jax.random.key(i)})["z"]
                  for i in range(400)])
  np.testing.assert_allclose(zs.mean(0), mean, atol=5 * float(jnp.exp(0.5 * logvar).max()) / 20)
  np.testing.assert_allclose(zs.std(0), jnp.exp(0.5 * logvar), rtol=0.15)


def test_denoising_corrupts_in_training_only():
  model = DenoisingAutoencoder(input_shape=(200,), features=(8,), corruption_level=0.3)
  x = jnp.ones((50, 200))
  variables = model.init(RNGS, x)
  corrupt = lambda m, x, train: m._corrupt(x, train)  # noqa: E731
  noisy = model.apply(variables, x, True, method=corrupt, rngs={"noise": KEY})
  assert abs(float((noisy == 0).mean()) - 0.3) < 0.01 and set(np.unique(noisy)) == {0.0, 1.0}
  np.testing.assert_array_equal(model.apply(variables, x, False, method=corrupt), x)
  g = Autoencoder(input_shape=(200,), features=(8,), corruption="gaussian", corruption_level=0.5)
  noise = g.apply(variables, x, True, method=corrupt, rngs={"noise": KEY}) - x
  assert abs(float(noise.std()) - 0.5) < 0.01


@pytest.mark.parametrize("kw,match", [
    (dict(input_shape=(10, 10, 1), encoder="conv", features=(8, 8)),
     r"model.input_shape=\(10, 10, 1\): spatial sizes must be divisible by 2 \*\* "
     r"len\(model.features\) = 4"),
    (dict(input_shape=(8, 8, 1), encoder="conv", ndim=1),
     r"model.input_shape=\(8, 8, 1\) does not fit model.ndim=1"),
    (dict(input_shape=(8, 8, 1), encoder="recurrent"), r"model.encoder='recurrent'; expected one "
     r"of \['dense', 'conv'\]"),
    (dict(input_shape=(8, 8, 1), likelihood="poisson"), r"model.likelihood='poisson'"),
    (dict(input_shape=(8, 8, 1), latent_dim=0), r"model.latent_dim=0"),
    (dict(input_shape=(8, 8, 1), corruption="mask", corruption_level=1.0),
     r"model.corruption_level=1.0 with corruption='mask'"),
])
def test_bad_fields_are_named(kw, match):
  with pytest.raises(ValueError, match=match):
    Autoencoder(**kw).init(RNGS, jnp.zeros((1,) + kw["input_shape"]))


def test_wrong_input_shape_and_vae_corruption_are_named():
  model = VAE(input_shape=(8, 8, 1), features=(8,))
  with pytest.raises(ValueError, match=r"inputs of shape \(2, 8, 8\) do not match "
                     r"model.input_shape=\(8, 8, 1\)"):
    model.init(RNGS, jnp.zeros((2, 8, 8)))
  with pytest.raises(ValueError, match="a VAE takes no input corruption"):
    VAE(input_shape=(4,), features=(8,), corruption="mask").init(RNGS, jnp.zeros((1, 4)))
