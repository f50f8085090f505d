"""Generative adversarial networks: DCGAN generator and discriminator (Radford et al. 2016) in 1-D
and 2-D, unconditional or class-conditional, with optional spectral normalisation.

`GAN` holds both networks, so one `init` gives one parameter tree `{"generator": ...,
"discriminator": ...}` that the adversarial paradigm splits between its two optimizers:

    model = GAN(data_shape=(8, 8, 1), latent_dim=32, num_classes=10)
    variables = model.init(key, z, labels)
    x = model.apply(variables, z, labels, method=model.generate)            # (B, 8, 8, 1)
    logits = model.apply(variables, x, labels, method=model.discriminate)   # (B,)

- Generator: [z, class embedding] -> dense to a (size / 2^L)-sized map of `g_features[0]`
  channels -> L stride-2 transposed convolutions (`g_features[1:]`, then the data's channels),
  each hidden one followed by the norm (`g_norm`) and ReLU -> the output activation (`output`:
  `linear`, `sigmoid` for data in [0, 1], `tanh` for [-1, 1]). Every spatial size of the data must
  be divisible by 2^L, L = len(g_features).
- Discriminator: stride-2 convolutions (`d_features`) with leaky ReLU (slope 0.2), no
  normalisation, flatten to phi(x) (sown as `intermediates/features`), then a linear output; a
  conditional one adds the projection term <embed(y), phi(x)> (Miyato & Koyama 2018).
- `spectral_norm`: `"none"`, `"discriminator"` (Miyato et al. 2018) or `"both"` wraps each dense
  and conv layer in `flax.linen.SpectralNorm`; its power-iteration state lives in the
  `batch_stats` collection and advances only when called with `train=True`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch import conv as conv_lib
from arch.common import channels_last, check_choice
from arch.initializers import layer_inits

G_NORMS = ("batch", "layer", "none")
OUTPUTS = ("linear", "sigmoid", "tanh")
SPECTRAL = ("none", "discriminator", "both")


class _Net(nn.Module):
  """Fields and layer helpers shared by the two networks."""

  data_shape: tuple[int, ...]
  features: Sequence[int]
  num_classes: int
  ndim: int
  kernel_size: int
  spectral_norm: bool
  weight_init: str
  dtype: Any
  param_dtype: Any

  def _layer(self, layer: nn.Module, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.spectral_norm:
      return nn.SpectralNorm(layer, name=f"sn_{layer.name}")(x, update_stats=train)
    return layer(x)

  def _dense(self, width: int, name: str, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    kernel_init, bias_init = layer_inits(self.weight_init, x.shape[-1])
    return self._layer(nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init,
                                dtype=self.dtype, param_dtype=self.param_dtype, name=name),
                       x, train)

  def _conv(self, cls: type, width: int, name: str, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    kernel_init, bias_init = layer_inits(self.weight_init, self.kernel_size ** self.ndim
                                         * x.shape[-1])
    layer = cls(width, (self.kernel_size,) * self.ndim, strides=(2,) * self.ndim, padding="SAME",
                kernel_init=kernel_init, bias_init=bias_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)
    return self._layer(layer, x, train)

  def _check_labels(self, labels: jnp.ndarray | None, batch: int) -> None:
    if self.num_classes and (labels is None or labels.shape != (batch,)):
      raise ValueError(f"model.num_classes={self.num_classes} makes a conditional GAN: expected "
                       f"labels of shape ({batch},); got "
                       f"{None if labels is None else labels.shape}")


class Generator(_Net):
  """Latents (B, latent_dim) [and labels (B,)] -> samples (B, *data_shape)."""

  norm: str = "batch"
  output: str = "linear"

  @nn.compact
  def __call__(self, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    self._check_labels(labels, z.shape[0])
    shape = channels_last(self.data_shape, self.ndim)
    factor = 2 ** len(self.features)
    if any(s % factor for s in shape[:-1]):
      raise ValueError(f"model.data_shape={tuple(self.data_shape)}: the generator doubles every "
                       f"spatial axis {len(self.features)} times (len(model.g_features)), so each "
                       f"spatial size must be divisible by {factor}")
    x = z.astype(self.dtype)
    if self.num_classes:
      embed = nn.Embed(self.num_classes, z.shape[-1], dtype=self.dtype,
                       param_dtype=self.param_dtype, name="class_embed")(labels)
      x = jnp.concatenate([x, embed], axis=-1)
    bottom = tuple(s // factor for s in shape[:-1]) + (self.features[0],)
    x = self._dense(math.prod(bottom), "project", x, train)
    x = nn.relu(self._norm(x.reshape((x.shape[0],) + bottom), train, "norm0"))
    widths = list(self.features[1:]) + [shape[-1]]
    for i, width in enumerate(widths):
      x = self._conv(conv_lib.ConvTranspose, width, f"deconv{i}", x, train)
      if i < len(widths) - 1:
        x = nn.relu(self._norm(x, train, f"norm{i + 1}"))
    x = {"linear": lambda v: v, "sigmoid": nn.sigmoid, "tanh": jnp.tanh}[self.output](
        x.astype(jnp.promote_types(x.dtype, jnp.float32)))
    return x.reshape((x.shape[0],) + tuple(self.data_shape))

  def _norm(self, x: jnp.ndarray, train: bool, name: str) -> jnp.ndarray:
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=name)(x)
    if self.norm == "layer":
      return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
    return x


class Discriminator(_Net):
  """Samples (B, *data_shape) [and labels (B,)] -> logits (B,): large means "real"."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    if tuple(x.shape[1:]) != tuple(self.data_shape):
      raise ValueError(f"discriminator inputs of shape {x.shape}; expected (B, "
                       f"{', '.join(map(str, self.data_shape))}) (model.data_shape)")
    self._check_labels(labels, x.shape[0])
    x = x.reshape((x.shape[0],) + channels_last(self.data_shape, self.ndim)).astype(self.dtype)
    for i, width in enumerate(self.features):
      x = nn.leaky_relu(self._conv(conv_lib.Conv, width, f"conv{i}", x, train), 0.2)
    phi = x.reshape((x.shape[0], -1))
    self.sow("intermediates", "features", phi)
    out = self._dense(1, "out", phi, train)[:, 0]
    if self.num_classes:
      embed = nn.Embed(self.num_classes, phi.shape[-1], dtype=self.dtype,
                       param_dtype=self.param_dtype, name="class_embed")(labels)
      out = out + jnp.sum(embed * phi, axis=-1)
    return out.astype(jnp.promote_types(out.dtype, jnp.float32))


class GAN(nn.Module):
  """A generator and a discriminator for data of shape `data_shape`.

  Attributes:
    data_shape: one example's shape, e.g. (8, 8, 1) for digits, (40,) for MNIST-1D.
    latent_dim: size of the generator's Gaussian input z.
    num_classes: 0 for an unconditional GAN; else both networks take labels (B,) in
      [0, num_classes).
    ndim: spatial axes of the data (1: signals (L[, C]); 2: images (H, W[, C])).
    g_features: the generator's channels, from the smallest map up (len = the number of 2x
      upsamplings).
    d_features: the discriminator's channels per stride-2 convolution.
    kernel_size: of every (transposed) convolution, on every spatial axis.
    g_norm: the generator's normalisation, `"batch"` (DCGAN), `"layer"` or `"none"`.
    output: the generator's output activation, `"linear"`, `"sigmoid"` or `"tanh"`.
    spectral_norm: `"none"`, `"discriminator"` or `"both"`.
    weight_init: a name in `arch.initializers.INITS`.
  """

  data_shape: tuple[int, ...]
  latent_dim: int = 32
  num_classes: int = 0
  ndim: int = 2
  g_features: Sequence[int] = (128, 64)
  d_features: Sequence[int] = (64, 128)
  kernel_size: int = 4
  g_norm: str = "batch"
  output: str = "linear"
  spectral_norm: str = "none"
  weight_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    check_choice(self.g_norm, G_NORMS, "g_norm")
    check_choice(self.output, OUTPUTS, "output")
    check_choice(self.spectral_norm, SPECTRAL, "spectral_norm")
    if self.ndim not in (1, 2) or len(self.data_shape) not in (self.ndim, self.ndim + 1):
      raise ValueError(f"model.data_shape={tuple(self.data_shape)} with model.ndim={self.ndim}: "
                       "expected ndim 1 with (L[, C]) or ndim 2 with (H, W[, C])")
    shared = dict(data_shape=tuple(self.data_shape), num_classes=self.num_classes,
                  ndim=self.ndim, kernel_size=self.kernel_size, weight_init=self.weight_init,
                  dtype=self.dtype, param_dtype=self.param_dtype)
    self.generator = Generator(features=tuple(self.g_features), norm=self.g_norm,
                               output=self.output, spectral_norm=self.spectral_norm == "both",
                               **shared)
    self.discriminator = Discriminator(features=tuple(self.d_features),
                                       spectral_norm=self.spectral_norm != "none", **shared)

  def generate(self, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    """Samples (B, *data_shape) from latents (B, latent_dim)."""
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"latents of shape {z.shape}; expected (B, {self.latent_dim}) "
                       "(model.latent_dim)")
    return self.generator(z, labels, train)

  def discriminate(self, x: jnp.ndarray, labels: jnp.ndarray | None = None,
                   train: bool = False) -> jnp.ndarray:
    """Real-vs-fake logits (B,) of samples (B, *data_shape)."""
    return self.discriminator(x, labels, train)

  def __call__(self, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    """D(G(z)): initialises both networks."""
    return self.discriminate(self.generate(z, labels, train), labels, train)
