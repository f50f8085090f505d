"""A UNet denoiser for diffusion models (Ho et al. 2020; Nichol & Dhariwal 2021), in 1-D and 2-D.

    model = UNet(data_shape=(8, 8, 1), channels=32, channel_mults=(1, 2), attention_levels=(1,))
    variables = model.init(key, x, t)             # x (B, 8, 8, 1), t (B,) int timesteps
    out = model.apply(variables, x, t)            # (B, 8, 8, 1): the predicted eps or v

- Time: Vaswani et al.'s sinusoidal encoding of t (`arch.attention.sinusoidal`), then a two-layer
  MLP to `4 * channels`. A conditional UNet (`num_classes` > 0) adds a learned embedding of the
  label; label `num_classes` is the null class, the unconditional model that classifier-free
  guidance trains by dropping labels.
- Levels: `channel_mults` give each resolution's width (channels x mult); each level has
  `num_res_blocks` residual blocks (GroupNorm -> SiLU -> conv, plus the time embedding, ->
  GroupNorm -> SiLU -> dropout -> conv, with a 1x1 projection shortcut when the width changes),
  self-attention after each block on the levels in `attention_levels` (0 is the input
  resolution), and a stride-2 convolution down to the next level. The middle is
  block-attention-block; the up path mirrors the down path with one more block per level, each
  on the concatenation of the matching skip, and nearest-neighbour upsampling + conv.
- The last convolution starts at zero, so an untrained model predicts 0 (the mean of eps).
Every spatial size must be divisible by 2^(len(channel_mults) - 1).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.attention import MultiHeadAttention, sinusoidal
from arch.common import channels_last, maybe_remat
from arch.cpu_conv import conv_layer
from arch.cpu_dense import dense_layer
from arch.cpu_norm import group_norm_layer


def upsample(h: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour upsampling of h (B, *spatial, C) by 2 along every spatial axis: the values
  of `jax.image.resize(..., "nearest")` as a broadcast and a reshape, whose gradient is a sum
  over each 2 x 2 block, where XLA:CPU computes resize's gather and its gradient's scatter-adds
  (`benchmarks.step_variants --variants strata,gather_upsample`; docs/cpu_conv.md)."""
  spatial = h.shape[1:-1]
  expanded = h.reshape((h.shape[0], *(d for n in spatial for d in (n, 1)), h.shape[-1]))
  tiled = jnp.broadcast_to(expanded, (h.shape[0], *(d for n in spatial for d in (n, 2)),
                                      h.shape[-1]))
  return tiled.reshape((h.shape[0], *(2 * n for n in spatial), h.shape[-1]))


class ResBlock(nn.Module):
  """The residual block with a time (and class) embedding added between its two convolutions."""

  features: int
  ndim: int
  groups: int
  dropout: float
  dtype: Any
  param_dtype: Any
  norm_kernel: str = "xla"
  dense_kernel: str = "xla"
  conv_kernel: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, emb: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = lambda f, k, name, **kw: conv_layer(self.conv_kernel)(  # noqa: E731
        f, (k,) * self.ndim, padding="SAME", name=name, dtype=self.dtype,
        param_dtype=self.param_dtype, **kw)
    norm = lambda name: group_norm_layer(self.norm_kernel)(  # noqa: E731
        self.groups, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    h = conv(self.features, 3, "conv0")(nn.silu(norm("norm0")(x)))
    e = dense_layer(self.dense_kernel)(self.features, dtype=self.dtype,
                                       param_dtype=self.param_dtype, name="emb")(nn.silu(emb))
    h = h + e.reshape((e.shape[0],) + (1,) * self.ndim + (self.features,))
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(norm("norm1")(h)))
    h = conv(self.features, 3, "conv1", kernel_init=nn.initializers.zeros_init())(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, "shortcut")(x)
    return x + h


class AttentionBlock(nn.Module):
  """GroupNorm then multi-head self-attention over every position, added back."""

  num_heads: int
  groups: int
  dtype: Any
  param_dtype: Any
  attention_kernel: str = "xla"
  norm_kernel: str = "xla"
  dense_kernel: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, c = x.shape[0], x.shape[-1]
    h = group_norm_layer(self.norm_kernel)(self.groups, dtype=self.dtype,
                                           param_dtype=self.param_dtype,
                                           name="norm")(x).reshape(b, -1, c)
    h = MultiHeadAttention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                           attention_kernel=self.attention_kernel,
                           dense_kernel=self.dense_kernel, name="attention")(h)
    h = dense_layer(self.dense_kernel)(c, kernel_init=nn.initializers.zeros_init(),
                                       dtype=self.dtype, param_dtype=self.param_dtype,
                                       name="out")(h)
    return x + h.reshape(x.shape)


class UNet(nn.Module):
  """A denoiser (B, *data_shape), timesteps (B,) [, labels (B,)] -> (B, *data_shape).

  Attributes:
    data_shape: one example's shape, e.g. (8, 8, 1) for digits, (40,) for MNIST-1D.
    ndim: spatial axes (1: signals (L[, C]); 2: images (H, W[, C])).
    channels: the first level's width.
    channel_mults: each level's width as a multiple of `channels`; len = the number of levels.
    num_res_blocks: residual blocks per level on the way down.
    attention_levels: levels (0 = input resolution) with self-attention after each block.
    num_heads: attention heads.
    num_classes: 0 for an unconditional model; else labels in [0, num_classes], the last one
      being the null class.
    dropout: inside the residual blocks, in training.
    groups: GroupNorm groups; every level's width must be divisible by it.
    remat: recompute each residual block's activations in the backward pass (`nn.remat`).
    remat_policy: what the backward pass keeps of each block (`arch.common.REMAT_POLICIES`:
      "" everything, "nothing_saveable" the same as `remat=True`, "dots_saveable",
      "dots_with_no_batch_dims_saveable").
    attention_kernel: on the CPU, the attention by XLA's ops ("xla") or by a compiled kernel
      ("cpu": `arch.cpu_attention`, built on first use); GPU and TPU ignore it.
    norm_kernel: on the CPU, the GroupNorms by XLA's ops ("xla") or by a compiled kernel ("cpu":
      `arch.cpu_norm`, float32); the same parameters; GPU and TPU ignore it.
    dense_kernel: on the CPU, the dense layers' backward pass (time embedding, attention) by
      XLA's ops ("xla") or by `arch.cpu_dense` ("cpu"); GPU and TPU ignore it.
    conv_kernel: on the CPU, the 2-D convolutions by XLA ("xla", `arch.conv`) or by oneDNN
      ("onednn": `arch.cpu_conv`, float32); the same parameters; GPU and TPU ignore it.
  """

  data_shape: tuple[int, ...]
  ndim: int = 2
  channels: int = 32
  channel_mults: Sequence[int] = (1, 2)
  num_res_blocks: int = 2
  attention_levels: Sequence[int] = (1,)
  num_heads: int = 4
  num_classes: int = 0
  dropout: float = 0.0
  groups: int = 8
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = ""
  attention_kernel: str = "xla"
  norm_kernel: str = "xla"
  dense_kernel: str = "xla"
  conv_kernel: str = "xla"

  def _check(self, x: jnp.ndarray, t: jnp.ndarray, labels: jnp.ndarray | None) -> None:
    if tuple(x.shape[1:]) != tuple(self.data_shape):
      raise ValueError(f"inputs of shape {x.shape}; expected (B, "
                       f"{', '.join(map(str, self.data_shape))}) (model.data_shape)")
    if t.shape != x.shape[:1]:
      raise ValueError(f"timesteps of shape {t.shape}; expected ({x.shape[0]},), one per example")
    if self.num_classes and (labels is None or labels.shape != x.shape[:1]):
      raise ValueError(f"model.num_classes={self.num_classes} makes a conditional UNet: expected "
                       f"labels of shape ({x.shape[0]},) (the null class is "
                       f"{self.num_classes}); got {None if labels is None else labels.shape}")
    factor = 2 ** (len(self.channel_mults) - 1)
    spatial = channels_last(self.data_shape, self.ndim)[:-1]
    if any(s % factor for s in spatial):
      raise ValueError(f"model.data_shape={tuple(self.data_shape)}: {len(self.channel_mults)} "
                       f"levels halve every spatial axis {len(self.channel_mults) - 1} times, so "
                       f"each spatial size must be divisible by {factor}")
    for m in self.channel_mults:
      if (self.channels * m) % self.groups:
        raise ValueError(f"model.channels={self.channels} x mult {m} is not divisible by "
                         f"model.groups={self.groups}")

  @nn.compact
  def __call__(self, x: jnp.ndarray, t: jnp.ndarray, labels: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    self._check(x, t, labels)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    kernels = dict(norm_kernel=self.norm_kernel, dense_kernel=self.dense_kernel)
    conv_class = conv_layer(self.conv_kernel)
    shape = channels_last(self.data_shape, self.ndim)
    h = x.reshape((x.shape[0],) + shape).astype(self.dtype)

    dim = 4 * self.channels
    emb = sinusoidal(t.astype(jnp.float32), self.channels)
    dense = dense_layer(self.dense_kernel)
    emb = dense(dim, name="time0", **kw)(emb)
    emb = dense(dim, name="time1", **kw)(nn.silu(emb))
    if self.num_classes:
      emb = emb + nn.Embed(self.num_classes + 1, dim, name="class_embed", **kw)(labels)

    res_block = maybe_remat(ResBlock, self.remat, static_argnums=(3,),  # train
                            policy=self.remat_policy)

    def block(h, width, name):
      return res_block(width, self.ndim, self.groups, self.dropout, name=name, **kw,
                       **kernels, conv_kernel=self.conv_kernel)(h, emb, train)

    def attend(h, level, name):
      if level not in self.attention_levels:
        return h
      return AttentionBlock(self.num_heads, self.groups, name=name, **kw, **kernels,
                            attention_kernel=self.attention_kernel)(h)

    conv = lambda f, name, **c: conv_class(f, (3,) * self.ndim, padding="SAME",  # noqa: E731
                                           name=name, **kw, **c)
    h = conv(self.channels, "stem")(h)
    skips = [h]
    levels = len(self.channel_mults)
    for i, mult in enumerate(self.channel_mults):
      for j in range(self.num_res_blocks):
        h = attend(block(h, self.channels * mult, f"down{i}_block{j}"), i, f"down{i}_attn{j}")
        skips.append(h)
      if i < levels - 1:
        h = conv(h.shape[-1], f"down{i}_pool", strides=(2,) * self.ndim)(h)
        skips.append(h)

    width = self.channels * self.channel_mults[-1]
    h = block(h, width, "mid_block0")
    h = AttentionBlock(self.num_heads, self.groups, name="mid_attn", **kw, **kernels,
                       attention_kernel=self.attention_kernel)(h)
    h = block(h, width, "mid_block1")

    for i in reversed(range(levels)):
      for j in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = attend(block(h, self.channels * self.channel_mults[i], f"up{i}_block{j}"), i,
                   f"up{i}_attn{j}")
      if i > 0:
        h = conv(h.shape[-1], f"up{i}_upsample")(upsample(h))

    h = nn.silu(group_norm_layer(self.norm_kernel)(self.groups, name="out_norm", **kw)(h))
    h = conv(shape[-1], "out", kernel_init=nn.initializers.zeros_init())(h)
    h = h.astype(jnp.promote_types(h.dtype, jnp.float32))
    return h.reshape((x.shape[0],) + tuple(self.data_shape))


def parameter_count(model: UNet) -> int:
  """The number of parameters of `model` (evaluated abstractly, no compute)."""
  x = jnp.zeros((1,) + tuple(model.data_shape))
  labels = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.zeros((1,), jnp.int32),
                                             labels))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
