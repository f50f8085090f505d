"""Pure Flax Linen modules, no training logic. Importable on their own:

    from arch.cnn import ResNet20
    model = ResNet20(num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)

`build(config.model)` resolves `config.model.name` (`"family.Name"`) in `REGISTRY` and passes the
other fields as keyword arguments. A model defined outside this package is added with
`register("family.Name", ModelClass)`; one inside it, by a line in `REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch import autoencoder, cnn, gan, mlp, recurrent, transformer, unet

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp.MLP": mlp.MLP,
    "cnn.CNN": cnn.CNN,
    "cnn.LeNet5": cnn.LeNet5,
    "cnn.ResNet": cnn.ResNet,
    "cnn.ResNet20": cnn.ResNet20,
    "cnn.ResNet56": cnn.ResNet56,
    "cnn.ResNet18": cnn.ResNet18,
    "cnn.ResNet50": cnn.ResNet50,
    "cnn.ResNetTiny": cnn.ResNetTiny,
    "recurrent.RecurrentNet": recurrent.RecurrentNet,
    "transformer.TransformerClassifier": transformer.TransformerClassifier,
    "transformer.TransformerLM": transformer.TransformerLM,
    "transformer.Llama": transformer.Llama,
    "transformer.ViTS16": transformer.ViTS16,
    "transformer.ViTB16": transformer.ViTB16,
    "autoencoder.Autoencoder": autoencoder.Autoencoder,
    "autoencoder.DenoisingAutoencoder": autoencoder.DenoisingAutoencoder,
    "autoencoder.VAE": autoencoder.VAE,
    "gan.GAN": gan.GAN,
    "unet.UNet": unet.UNet,
}

_MODULE_FIELDS = {"parent", "name"}


class ModelConfigError(ValueError):
  """A `config.model` that names no registered model or an argument it does not take."""
  exit_status = 2  # a config error (train/errors.py's contract; arch/ imports nothing of train/)


def register(name: str, factory: Callable[..., nn.Module]) -> None:
  """Adds a model under `name` (`config.model.name`): a flax.linen.Module class, or a
  functools.partial of one (a named variant). A name already taken by another model is an
  error, so two extensions cannot silently replace each other's.

  Raises:
    ValueError: a name already registered for another factory, or a factory that is not a
      Module class.
  """
  cls = factory.func if isinstance(factory, functools.partial) else factory
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ValueError(f"register({name!r}, {factory!r}): expected a flax.linen.Module class")
  if REGISTRY.get(name, factory) is not factory:
    raise ValueError(f"model.name={name!r} is already registered as {REGISTRY[name]!r}")
  REGISTRY[name] = factory


def fields(factory: Callable[..., nn.Module]) -> set[str]:
  """The keyword arguments a registered model accepts."""
  cls = factory.func if isinstance(factory, functools.partial) else factory
  return {f.name for f in dataclasses.fields(cls) if f.init} - _MODULE_FIELDS


def _plain(value: Any) -> Any:
  if hasattr(value, "to_dict"):
    return {k: _plain(v) for k, v in value.to_dict().items()}
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value


def build(model_config: Mapping[str, Any]) -> nn.Module:
  """The module named by `model_config["name"]`, built with the remaining fields.

  Raises:
    ModelConfigError: an unknown name (listing the registered ones) or an argument the model
      does not take (listing the ones it does).
  """
  kwargs = _plain(model_config)
  kwargs = dict(kwargs)
  name = kwargs.pop("name", None)
  if name not in REGISTRY:
    raise ModelConfigError(f"model.name={name!r} is not a registered model; expected one of "
                     f"{sorted(REGISTRY)}")
  factory = REGISTRY[name]
  unknown = sorted(set(kwargs) - fields(factory))
  if unknown:
    raise ModelConfigError(f"model.{unknown[0]} is not an argument of {name}; it takes "
                     f"{sorted(fields(factory))}")
  return factory(**kwargs)


def init_cache(model: nn.Module, batch: int, length: int) -> Any:
  """The zero decoding cache (`cache` collection) of a model that takes `decode=True`: key/value
  caches with room for `length` steps (`transformer.TransformerLM`) or recurrent carries
  (`recurrent.RecurrentNet`), for `batch` sequences of int tokens."""
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((batch, length), jnp.int32),
                         decode=True))
  if "cache" not in shapes:
    raise ValueError(f"{type(model).__name__} keeps no decoding cache")
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
