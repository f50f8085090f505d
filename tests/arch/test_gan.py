"""arch/gan.py: shapes in 1-D and 2-D, conditioning, spectral normalisation against an SVD, and
clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import gan


def _init(model, b=4, labels=True):
  z = jnp.ones((b, model.latent_dim))
  y = jnp.arange(b) % model.num_classes if model.num_classes and labels else None
  return jax.jit(model.init)(jax.random.key(0), z, y), z, y  # jitted: op by op is slower


@pytest.mark.parametrize("kwargs,shape", [
    (dict(data_shape=(8, 8, 1)), (8, 8, 1)),
    (dict(data_shape=(8, 8), num_classes=10, g_norm="layer", output="sigmoid"), (8, 8)),
    (dict(data_shape=(40,), ndim=1, g_features=(16, 8, 4), d_features=(4, 8), kernel_size=5,
          spectral_norm="both", output="tanh"), (40,)),
])
def test_shapes_and_output_range(kwargs, shape):
  model = arch.build(dict(name="gan.GAN", **kwargs))
  variables, z, y = _init(model)
  x = jax.jit(lambda v, z, y: model.apply(v, z, y, method=model.generate))(variables, z * 3, y)
  assert x.shape == (4,) + shape and x.dtype == jnp.float32
  if model.output == "sigmoid":
    assert 0 <= float(x.min()) and float(x.max()) <= 1
  if model.output == "tanh":
    assert -1 <= float(x.min()) and float(x.max()) <= 1
  logits = jax.jit(lambda v, x, y: model.apply(v, x, y, method=model.discriminate))(
      variables, x, y)
  assert logits.shape == (4,)


def test_projection_discriminator_adds_the_class_embedding_dot_features():
  model = gan.GAN(data_shape=(8, 8, 1), num_classes=3, d_features=(4, 8))
  variables, z, _ = _init(model, b=2)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  outs, feats = [], None
  for label in range(3):
    y = jnp.full((2,), label)
    out, state = model.apply(variables, x, y, method=model.discriminate,
                             mutable=["intermediates"])
    outs.append(out)
    feats = state["intermediates"]["discriminator"]["features"][0]
  embed = variables["params"]["discriminator"]["class_embed"]["embedding"]
  # D(x, a) - D(x, b) = <e_a - e_b, phi(x)>: the unconditional part cancels.
  np.testing.assert_allclose(outs[0] - outs[2], feats @ (embed[0] - embed[2]), rtol=1e-5,
                             atol=1e-5)


def test_spectral_norm_makes_each_discriminator_layer_1_lipschitz():
  model = gan.GAN(data_shape=(8, 8, 1), d_features=(4, 8), spectral_norm="discriminator")
  variables, z, _ = _init(model)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  state = {"batch_stats": variables["batch_stats"]}
  for _ in range(30):  # power iteration advances one step per train-mode call
    _, state = model.apply({"params": variables["params"], **state}, x, method=model.discriminate,
                           train=True, mutable=["batch_stats"])
  stats = state["batch_stats"]["discriminator"]
  for layer in ("conv0", "conv1", "out"):
    kernel = np.asarray(variables["params"]["discriminator"][layer]["kernel"])
    top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    sigma = float(stats[f"sn_{layer}"][f"{layer}/kernel/sigma"])
    np.testing.assert_allclose(sigma, top, rtol=1e-3)
  # the generator's own layers are not normalised under "discriminator"
  assert "sn_project" not in variables["batch_stats"]["generator"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(data_shape=(6, 6, 1)), "divisible by 4"),
    (dict(data_shape=(8, 8, 1), g_norm="group"), "model.g_norm='group'"),
    (dict(data_shape=(8, 8, 1), output="relu"), "model.output='relu'"),
    (dict(data_shape=(8, 8, 1), spectral_norm="yes"), "model.spectral_norm='yes'"),
    (dict(data_shape=(8, 8, 1), ndim=1), "model.ndim=1"),
])
def test_bad_fields_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _init(gan.GAN(**kwargs))


def test_conditional_needs_labels_and_shapes_are_checked():
  model = gan.GAN(data_shape=(8, 8, 1), num_classes=10, g_features=(8, 4), d_features=(4, 8))
  with pytest.raises(ValueError, match=r"num_classes=10 makes a conditional GAN"):
    _init(model, labels=False)
  variables, z, y = _init(model)
  with pytest.raises(ValueError, match=r"latents of shape \(4, 3\); expected \(B, 32\)"):
    model.apply(variables, z[:, :3], y, method=model.generate)
  with pytest.raises(ValueError, match=r"inputs of shape \(4, 8, 8\); expected \(B, 8, 8, 1\)"):
    model.apply(variables, jnp.zeros((4, 8, 8)), y, method=model.discriminate)
