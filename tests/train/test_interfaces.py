"""Paradigms by interface, not by class: a model defined here, in no file of arch/ and of no class
a paradigm knows, trains under each paradigm once it is registered and has the methods that
paradigm's docstring lists; one without them is refused with the missing names."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import pytest

import arch
from train import config as config_lib
from train import loop


class TinyClassifier(nn.Module):
  """supervised: __call__(inputs, train) -> logits."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes)(nn.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1))))


class LinearAutoencoder(nn.Module):
  """reconstruction: encode, decode, reconstruct, likelihood, variational."""
  input_shape: tuple = (8, 8, 1)
  latent_dim: int = 4
  likelihood: str = "gaussian"
  variational = False

  def setup(self):
    self.down = nn.Dense(self.latent_dim)
    self.up = nn.Dense(math.prod(self.input_shape))

  def encode(self, x):
    return self.down(x.reshape(x.shape[0], -1))

  def decode(self, z):
    return self.up(z).reshape((z.shape[0],) + tuple(self.input_shape))

  def reconstruct(self, output):
    return output

  def __call__(self, x, train: bool = False):
    return {"output": self.decode(self.encode(x))}


class _Dense(nn.Module):
  out: int

  @nn.compact
  def __call__(self, x, labels=None, train: bool = False):
    return nn.Dense(self.out)(nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1))))


class MLPGAN(nn.Module):
  """adversarial: generate, discriminate, latent_dim, data_shape, num_classes, output; the two
  networks' parameters under `generator` and `discriminator`."""
  data_shape: tuple = (8, 8, 1)
  latent_dim: int = 8
  num_classes: int = 0
  output: str = "linear"

  def setup(self):
    self.generator = _Dense(math.prod(self.data_shape))
    self.discriminator = _Dense(1)

  def generate(self, z, labels=None, train: bool = False):
    return self.generator(z).reshape((z.shape[0],) + tuple(self.data_shape))

  def discriminate(self, x, labels=None, train: bool = False):
    return self.discriminator(x)[:, 0]

  def __call__(self, z, labels=None, train: bool = False):
    return self.discriminate(self.generate(z, labels, train), labels, train)


class MLPDenoiser(nn.Module):
  """diffusion: __call__(x_t, t, labels, train) -> eps, data_shape, num_classes."""
  data_shape: tuple = (8, 8, 1)
  num_classes: int = 0

  @nn.compact
  def __call__(self, x, t, labels=None, train: bool = False):
    h = jnp.concatenate([x.reshape(x.shape[0], -1), (t[:, None] / 1000.0).astype(x.dtype)], -1)
    return nn.Dense(math.prod(self.data_shape))(nn.relu(nn.Dense(32)(h))).reshape(x.shape)


MODELS = {"supervised": ("test.TinyClassifier", TinyClassifier, dict(num_classes=10)),
          "reconstruction": ("test.LinearAutoencoder", LinearAutoencoder, {}),
          "adversarial": ("test.MLPGAN", MLPGAN, {}),
          "diffusion": ("test.MLPDenoiser", MLPDenoiser, {})}


@pytest.fixture
def registered():
  for name, cls, _ in MODELS.values():
    arch.register(name, cls)
  yield
  for name, _, _ in MODELS.values():
    arch.REGISTRY.pop(name)


def _config(paradigm: str, data_dir: str, model_name: str, fields: dict):
  c = config_lib.base(paradigm)
  c.data.source, c.data.data_dir, c.data.normalize = "digits", data_dir, "global"
  c.data.batch_size, c.data.eval_batch_size = 32, 360
  c.model = dict(name=model_name, **fields)
  if paradigm == "diffusion":
    c.diffusion.steps, c.diffusion.sample_steps = 50, 5
  if "generative" in c:
    c.generative.grid_samples = 0
  config_lib.tiny(c, steps=4)
  return c


@pytest.mark.parametrize("paradigm", sorted(MODELS))
def test_a_new_model_trains_under_each_paradigm(paradigm, registered, data_dir, tmp_path):
  name, _, fields = MODELS[paradigm]
  final = loop.train_and_evaluate(_config(paradigm, data_dir, name, fields), str(tmp_path))
  assert final["count"] == 360 and math.isfinite(final["loss"]), final


@pytest.mark.parametrize("paradigm,missing", [("reconstruction", "lacks encode"),
                                              ("adversarial", "lacks generate"),
                                              ("diffusion", "lacks data_shape")])
def test_a_model_without_the_interface_is_refused_by_name(paradigm, missing, registered,
                                                          data_dir, tmp_path):
  c = _config(paradigm, data_dir, "test.TinyClassifier", dict(num_classes=10))
  with pytest.raises(config_lib.ConfigError, match=rf"model.name='test.TinyClassifier' "
                     rf"\(TinyClassifier\) {missing}.*paradigm='{paradigm}'"):
    loop.train_and_evaluate(c, str(tmp_path))


def test_register_refuses_a_taken_name_and_a_non_module(registered):
  with pytest.raises(ValueError, match="already registered"):
    arch.register("test.MLPGAN", MLPDenoiser)
  with pytest.raises(ValueError, match="expected a flax.linen.Module class"):
    arch.register("test.function", lambda: None)
