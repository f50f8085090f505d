"""Autoencoders: dense and convolutional (1-D and 2-D), denoising, and variational (VAE).

Every model here maps an input batch (B, *input_shape) through a latent code (B, latent_dim) back
to the input's shape, and exposes the two halves as methods so that analysis code can call them
on their own:

    model = VAE(input_shape=(8, 8, 1), latent_dim=8, encoder="conv", features=(32, 64))
    variables = model.init({"params": key, "latent": key}, x)
    mean, logvar = model.apply(variables, x, method=model.encode)
    logits = model.apply(variables, z, method=model.decode)

`likelihood` says what the decoder's output is: `"bernoulli"` outputs logits of per-element
probabilities (inputs in [0, 1]; the reconstruction is `sigmoid(output)`), `"gaussian"` outputs
the mean (the reconstruction is the output itself). An `Autoencoder` trains on the matching
loss (binary cross-entropy or mean squared error); a `VAE` on the negative ELBO of that
likelihood, the Gaussian with a learned per-element standard deviation (`observation_std`).

Randomness: a `VAE` draws its reparameterised latent from the `latent` rng stream; a denoising
autoencoder (`corruption` other than `"none"`) corrupts its inputs in training from the `noise`
stream. Conv encoders halve every spatial axis per layer (stride 2, SAME padding) and decoders
double it back with transposed convolutions, so each spatial size must be divisible by
2 ** len(features).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch import conv as conv_lib
from arch.common import channels_last, check_choice
from arch.initializers import layer_inits
from arch.mlp import activation as get_activation

ENCODERS = ("dense", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
CORRUPTIONS = ("none", "gaussian", "mask")


class _Half(nn.Module):
  """Fields shared by the encoder and the decoder."""

  input_shape: tuple[int, ...]
  kind: str
  features: Sequence[int]
  ndim: int
  kernel_size: int
  activation: str
  weight_init: str
  dtype: Any
  param_dtype: Any

  def _inits(self, fan_in: int) -> dict[str, Any]:
    kernel_init, bias_init = layer_inits(self.weight_init, fan_in)
    return dict(kernel_init=kernel_init, bias_init=bias_init, dtype=self.dtype,
                param_dtype=self.param_dtype)


class _Encoder(_Half):
  """Inputs (B, *input_shape) -> (B, out_dim): dense layers or strided convs, then a linear
  layer to the code."""

  out_dim: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    act = get_activation(self.activation)
    x = x.astype(self.dtype)
    if self.kind == "dense":
      x = x.reshape((x.shape[0], -1))
      for i, width in enumerate(self.features):
        x = act(nn.Dense(width, name=f"dense{i}", **self._inits(x.shape[-1]))(x))
    else:
      x = x.reshape((x.shape[0],) + channels_last(self.input_shape, self.ndim))
      k = (self.kernel_size,) * self.ndim
      for i, f in enumerate(self.features):
        x = act(conv_lib.Conv(f, k, strides=(2,) * self.ndim, padding="SAME", name=f"conv{i}",
                              **self._inits(self.kernel_size ** self.ndim * x.shape[-1]))(x))
      x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.out_dim, name="code", **self._inits(x.shape[-1]))(x)


class _Decoder(_Half):
  """Latent (B, D) -> raw outputs (B, *input_shape): the mirror image of `_Encoder`."""

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    act = get_activation(self.activation)
    x = z.astype(self.dtype)
    size = math.prod(self.input_shape)
    if self.kind == "dense":
      for i, width in enumerate(reversed(self.features)):
        x = act(nn.Dense(width, name=f"dense{i}", **self._inits(x.shape[-1]))(x))
      x = nn.Dense(size, name="out", **self._inits(x.shape[-1]))(x)
      return x.reshape((x.shape[0],) + tuple(self.input_shape))
    shape = channels_last(self.input_shape, self.ndim)
    factor = 2 ** len(self.features)
    bottom = tuple(s // factor for s in shape[:-1]) + (self.features[-1],)
    x = act(nn.Dense(math.prod(bottom), name="project", **self._inits(x.shape[-1]))(x))
    x = x.reshape((x.shape[0],) + bottom)
    k = (self.kernel_size,) * self.ndim
    widths = list(reversed(self.features))[1:] + [shape[-1]]
    for i, f in enumerate(widths):
      x = conv_lib.ConvTranspose(f, k, strides=(2,) * self.ndim, padding="SAME",
                                 name=f"deconv{i}",
                                 **self._inits(self.kernel_size ** self.ndim * x.shape[-1]))(x)
      if i < len(widths) - 1:
        x = act(x)
    return x.reshape((x.shape[0],) + tuple(self.input_shape))


class Autoencoder(nn.Module):
  """A deterministic autoencoder: encode to `latent_dim` numbers, decode back.

  Attributes:
    input_shape: one example's shape, e.g. (8, 8, 1) for digits, (40,) for MNIST-1D.
    latent_dim: size of the code.
    encoder: `"dense"` (an MLP of widths `features`) or `"conv"` (stride-2 convolutions with
      `features` channels); the decoder mirrors it.
    features: hidden widths (dense) or channels per conv layer (conv), input side first.
    ndim: spatial axes for `"conv"` (1: signals (L[, C]); 2: images (H, W[, C])).
    kernel_size: conv kernel size on every spatial axis.
    activation: a name in `arch.mlp.ACTIVATIONS`.
    likelihood: `"bernoulli"` (outputs are logits; inputs in [0, 1]) or `"gaussian"` (outputs
      are the reconstruction).
    corruption: the denoising autoencoder's training-time input noise: `"none"`, `"gaussian"`
      (add N(0, corruption_level^2)) or `"mask"` (set each element to 0 with probability
      `corruption_level`; 0 is the training mean under `data.normalize="per_feature"`).
    corruption_level: the noise's standard deviation (gaussian) or drop probability (mask).
    weight_init: a name in `arch.initializers.INITS`.
  """

  variational: ClassVar[bool] = False  # encode -> a code; VAE: encode -> (mean, logvar)

  input_shape: Sequence[int]
  latent_dim: int = 8
  encoder: str = "dense"
  features: Sequence[int] = (128, 64)
  ndim: int = 2
  kernel_size: int = 3
  activation: str = "relu"
  likelihood: str = "gaussian"
  corruption: str = "none"
  corruption_level: float = 0.0
  weight_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _code_size(self) -> int:
    return self.latent_dim

  def setup(self):
    check_choice(self.encoder, ENCODERS, "encoder")
    check_choice(self.likelihood, LIKELIHOODS, "likelihood")
    check_choice(self.corruption, CORRUPTIONS, "corruption")
    if self.latent_dim < 1:
      raise ValueError(f"model.latent_dim={self.latent_dim}; expected a positive size")
    if not self.features:
      raise ValueError("model.features=(); expected at least one layer width")
    if self.corruption == "mask" and not 0.0 <= self.corruption_level < 1.0:
      raise ValueError(f"model.corruption_level={self.corruption_level} with corruption='mask'; "
                       "expected a drop probability in [0, 1)")
    if self.encoder == "conv":
      shape = tuple(self.input_shape)
      if len(shape) not in (self.ndim, self.ndim + 1):
        raise ValueError(f"model.input_shape={shape} does not fit model.ndim={self.ndim}; "
                         f"expected {self.ndim} spatial sizes and an optional channel count")
      factor = 2 ** len(self.features)
      if any(s % factor for s in shape[:self.ndim]):
        raise ValueError(f"model.input_shape={shape}: spatial sizes must be divisible by "
                         f"2 ** len(model.features) = {factor} (one halving per conv layer)")
    common = dict(input_shape=tuple(self.input_shape), kind=self.encoder,
                  features=tuple(self.features), ndim=self.ndim, kernel_size=self.kernel_size,
                  activation=self.activation, weight_init=self.weight_init, dtype=self.dtype,
                  param_dtype=self.param_dtype)
    self.encoder_net = _Encoder(out_dim=self._code_size(), **common)
    self.decoder = _Decoder(**common)

  def _check_inputs(self, x: jnp.ndarray) -> None:
    if tuple(x.shape[1:]) != tuple(self.input_shape):
      raise ValueError(f"inputs of shape {x.shape} do not match model.input_shape="
                       f"{tuple(self.input_shape)} (expected (B, *input_shape))")

  def _corrupt(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or self.corruption == "none" or self.corruption_level == 0:
      return x
    rng = self.make_rng("noise")
    if self.corruption == "gaussian":
      return x + self.corruption_level * jax.random.normal(rng, x.shape, x.dtype)
    keep = jax.random.bernoulli(rng, 1.0 - self.corruption_level, x.shape)
    return jnp.where(keep, x, jnp.zeros_like(x))

  def encode(self, x: jnp.ndarray) -> jnp.ndarray:
    """(B, *input_shape) -> code (B, latent_dim)."""
    self._check_inputs(x)
    return self.encoder_net(x)

  def decode(self, z: jnp.ndarray) -> jnp.ndarray:
    """(B, latent_dim) -> raw outputs (B, *input_shape): logits (bernoulli) or means."""
    return self.decoder(z).astype(jnp.float32)

  def reconstruct(self, output: jnp.ndarray) -> jnp.ndarray:
    """The reconstruction in input units from raw decoder outputs."""
    return jax.nn.sigmoid(output) if self.likelihood == "bernoulli" else output

  def __call__(self, x: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
    """{"output": (B, *input_shape) raw decoder outputs, "z": (B, latent_dim) code}; in training
    a denoising model encodes a corrupted copy of `x`."""
    z = self.encode(self._corrupt(x, train))
    return {"output": self.decode(z), "z": z}


class DenoisingAutoencoder(Autoencoder):
  """An `Autoencoder` trained to undo masking noise (Vincent et al. 2008): a quarter of the input
  elements dropped by default."""

  corruption: str = "mask"
  corruption_level: float = 0.25


class VAE(Autoencoder):
  """A variational autoencoder (Kingma and Welling 2014): a diagonal Gaussian posterior
  q(z|x) = N(mean, exp(logvar)), a standard normal prior and a Bernoulli or Gaussian decoder.

  Attributes (beyond `Autoencoder`'s):
    min_std: floor of the Gaussian decoder's learned standard deviation (input units), which
      keeps the likelihood finite on elements that never vary (digits' border pixels).
  """

  variational: ClassVar[bool] = True
  min_std: float = 1e-2

  def _code_size(self) -> int:
    return 2 * self.latent_dim

  def setup(self):
    super().setup()
    if self.corruption != "none":
      raise ValueError(f"model.corruption={self.corruption!r}: a VAE takes no input corruption; "
                       "expected 'none'")
    if self.likelihood == "gaussian":
      if self.min_std <= 0:
        raise ValueError(f"model.min_std={self.min_std}; expected a positive floor")
      # softplus(0.5413) = 1: the decoder starts at unit standard deviation.
      self.raw_std = self.param("raw_std", nn.initializers.constant(0.5413),
                                tuple(self.input_shape), self.param_dtype)

  def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(B, *input_shape) -> posterior (mean, logvar), each (B, latent_dim)."""
    h = super().encode(x).astype(jnp.float32)
    return h[:, :self.latent_dim], h[:, self.latent_dim:]

  def observation_std(self) -> jnp.ndarray:
    """The Gaussian decoder's standard deviation, shape `input_shape` (input units)."""
    if self.likelihood != "gaussian":
      raise ValueError("observation_std: a Bernoulli decoder has no standard deviation")
    return self.min_std + jax.nn.softplus(self.raw_std.astype(jnp.float32))

  def __call__(self, x: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
    """{"output": raw decoder outputs at a posterior sample, "z": that sample, "mean", "logvar":
    the posterior, and for a Gaussian decoder "std": `observation_std()`}. The sample is drawn
    from the `latent` rng stream."""
    mean, logvar = self.encode(x)
    eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps
    out = {"output": self.decode(z), "z": z, "mean": mean, "logvar": logvar}
    if self.likelihood == "gaussian":
      out["std"] = self.observation_std()
    return out
