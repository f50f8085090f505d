"""Convolutional networks: plain conv stacks (1-D and 2-D) with pooling, LeNet-5, and ResNets.

Inputs are channels-last: (B, L) or (B, L, C) for `ndim=1`; (B, H, W) or (B, H, W, C) for
`ndim=2`. A missing channel axis is added. Outputs are logits (B, num_classes). The features
before the head are sown as `intermediates/features` (transfer learning, Frechet distance).

Named variants (flax `imagenet/models.py` style): `LeNet5`, `ResNet20`, `ResNet56` (CIFAR
ResNets, He et al. 2016, section 4.2), `ResNet18` (ImageNet layout), and `ResNetTiny` for tests.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch import conv as conv_lib
from arch.common import check_choice, maybe_remat
from arch.initializers import layer_inits
from arch.mlp import activation as get_activation


def _with_channels(x: jnp.ndarray, ndim: int) -> jnp.ndarray:
  if x.ndim == ndim + 1:
    return x[..., None]
  if x.ndim != ndim + 2:
    raise ValueError(f"model.ndim={ndim} expects inputs (B, {'L' if ndim == 1 else 'H, W'}[, C]); "
                     f"got shape {x.shape}")
  return x


def _per_layer(value: Any, n: int, field: str) -> list[Any]:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f"model.{field} has {len(value)} entries; expected one per conv layer ({n})")
    return list(value)
  return [value] * n


class CNN(nn.Module):
  """Conv -> activation [-> pool] per layer, then flatten or global-mean, dense layers, head.

  Attributes:
    num_classes: number of logits.
    features: output channels per conv layer.
    kernel_sizes, strides: per layer (or one value for all), applied on every spatial axis.
    padding: `"SAME"`, `"VALID"`, or an int of symmetric zero padding; one, or one per layer.
    ndim: spatial dimensions, 1 (signals) or 2 (images).
    pool: `"none"`, `"max"` or `"avg"` after each conv, window and stride `pool_size`.
    head: `"flatten"` (as LeNet and the MNIST-1D CNN) or `"mean"` (global average pooling).
    dense: widths of hidden dense layers between the convs and the head.
    activation: name in `arch.mlp.ACTIVATIONS`; dropout before every dense layer (train only).
    weight_init: weight initialisation of every layer, a name in `arch.initializers.INITS`.
  """

  num_classes: int
  features: Sequence[int] = (25, 25, 25)
  kernel_sizes: Any = (5, 3, 3)
  strides: Any = 2
  padding: Any = 1
  ndim: int = 1
  pool: str = "none"
  pool_size: int = 2
  head: str = "flatten"
  dense: Sequence[int] = ()
  activation: str = "relu"
  dropout: float = 0.0
  weight_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _inits(self, x: jnp.ndarray, receptive_field: int = 1) -> dict[str, Any]:
    kernel_init, bias_init = layer_inits(self.weight_init, receptive_field * x.shape[-1])
    return dict(kernel_init=kernel_init, bias_init=bias_init, dtype=self.dtype,
                param_dtype=self.param_dtype)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.pool not in ("none", "max", "avg"):
      raise ValueError(f"model.pool={self.pool!r}; expected 'none', 'max' or 'avg'")
    if self.head not in ("flatten", "mean"):
      raise ValueError(f"model.head={self.head!r}; expected 'flatten' or 'mean'")
    act = get_activation(self.activation)
    n = len(self.features)
    kernels = _per_layer(self.kernel_sizes, n, "kernel_sizes")
    strides = _per_layer(self.strides, n, "strides")
    paddings = _per_layer(self.padding, n, "padding")
    x = _with_channels(x, self.ndim).astype(self.dtype)
    for i, (f, k, s, p) in enumerate(zip(self.features, kernels, strides, paddings)):
      x = conv_lib.Conv(f, (k,) * self.ndim, strides=(s,) * self.ndim, padding=p,
                        name=f"conv{i}", **self._inits(x, k ** self.ndim))(x)
      x = act(x)
      window = (self.pool_size,) * self.ndim
      if self.pool == "max":
        x = nn.max_pool(x, window, strides=window)
      elif self.pool == "avg":
        x = nn.avg_pool(x, window, strides=window)
    x = x.reshape((x.shape[0], -1)) if self.head == "flatten" else x.mean(
        axis=tuple(range(1, 1 + self.ndim)))
    for i, width in enumerate(self.dense):
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = act(nn.Dense(width, name=f"dense{i}", **self._inits(x))(x))
    self.sow("intermediates", "features", x)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="head", **self._inits(x))(x)


# LeNet-5 (LeCun et al. 1998) with its average pooling, tanh and 120-84 dense layers. The first
# convolution keeps the size (28x28 MNIST is padded to LeNet's 32x32 input that way).
LeNet5 = functools.partial(CNN, features=(6, 16), kernel_sizes=5, strides=1,
                           padding=("SAME", "VALID"), ndim=2, pool="avg", dense=(120, 84),
                           activation="tanh")


SHORTCUTS = ("projection", "zero_pad")
PADDINGS = ("same", "symmetric")


class ResidualBlock(nn.Module):
  """The basic two-conv residual block. When the shape changes, the shortcut is a strided 1x1
  convolution and BatchNorm (`shortcut="projection"`, He et al. 2016's option B) or the input
  subsampled by the stride with zero channels appended (`"zero_pad"`, option A: no parameters;
  the paper's CIFAR-10 ResNets, as fb.resnet.torch's shortcutType A)."""

  features: int
  strides: int
  ndim: int
  kernel_size: int
  norm: Any
  dtype: Any
  param_dtype: Any
  shortcut: str = "projection"
  padding: str = "same"

  def _pad(self) -> Any:
    """The padding of the k x k convolutions (`ResNet.padding`)."""
    if self.padding == "symmetric":
      return [(self.kernel_size // 2,) * 2] * self.ndim
    return "SAME"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(conv_lib.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    k = (self.kernel_size,) * self.ndim
    s = (self.strides,) * self.ndim
    y = conv(self.features, k, strides=s, padding=self._pad(), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = conv(self.features, k, padding=self._pad(), name="conv2")(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
    if (x.shape[-1] != self.features or self.strides != 1) and self.shortcut == "zero_pad":
      x = x[(slice(None),) + (slice(None, None, self.strides),) * self.ndim]
      if self.features < x.shape[-1]:
        raise ValueError(f"shortcut='zero_pad' cannot narrow {x.shape[-1]} channels to "
                         f"{self.features}")
      x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, self.features - x.shape[-1])])
    elif x.shape[-1] != self.features or self.strides != 1:
      x = conv(self.features, (1,) * self.ndim, strides=s, name="proj")(x)
      x = self.norm(name="proj_bn")(x)
    return nn.relu(x + y)


class BottleneckBlock(ResidualBlock):
  """1x1 reduce, 3x3 (strided), 1x1 expand to 4 x `features`, with a projection shortcut when the
  shape changes (He et al. 2016, ResNet-50; the stride on the 3x3 conv, as torchvision's and
  the flax example's "v1.5"). The fields are `ResidualBlock`'s."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(conv_lib.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    one = (1,) * self.ndim
    s = (self.strides,) * self.ndim
    y = nn.relu(self.norm(name="bn1")(conv(self.features, one, name="conv1")(x)))
    y = conv(self.features, (self.kernel_size,) * self.ndim, strides=s, padding=self._pad(),
             name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = conv(self.features * 4, one, name="conv3")(y)
    y = self.norm(scale_init=nn.initializers.zeros, name="bn3")(y)
    if x.shape[-1] != self.features * 4 or self.strides != 1:
      x = conv(self.features * 4, one, strides=s, name="proj")(x)
      x = self.norm(name="proj_bn")(x)
    return nn.relu(x + y)


BLOCKS = {"basic": ResidualBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
  """A ResNet of basic or bottleneck blocks with BatchNorm; 1-D or 2-D.

  Attributes:
    num_classes: number of logits.
    stage_sizes: residual blocks per stage; each stage after the first halves the resolution.
    widths: channels per stage.
    ndim: spatial dimensions (1 or 2).
    kernel_size: of the block convolutions.
    stem: `"cifar"` (one 3x3 conv) or `"imagenet"` (7x7 stride-2 conv and 3x3 max pool).
    block: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1, 3x3, 1x1 to 4 x width).
    shortcut: where the shape changes, `"projection"` (1x1 conv + BatchNorm) or `"zero_pad"`
      (subsampled input, zero channels appended: He et al.'s option A; basic blocks only).
    dropout: before the head (train only).
    bn_momentum: running-average momentum of BatchNorm statistics.
    remat: recompute each residual block's activations in the backward pass (`nn.remat`)
      instead of storing them; same parameters, less memory.
    remat_policy: what the backward pass keeps of each block (`arch.common.REMAT_POLICIES`:
      "" everything, "nothing_saveable" the same as `remat=True`, "dots_saveable",
      "dots_with_no_batch_dims_saveable").
    padding: of the blocks' k x k convolutions: "same" (XLA's SAME: a stride-2 convolution of an
      even size pads 0 before and 1 after) or "symmetric" (k // 2 on each side, as PyTorch's
      `padding=1` in torchvision's ResNets; the two differ only where the stride is 2).

  BatchNorm statistics live in the `batch_stats` collection; under `jax.jit` over a sharded
  batch they are computed on the global batch, so one device and eight agree.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  ndim: int = 2
  kernel_size: int = 3
  stem: str = "cifar"
  block: str = "basic"
  dropout: float = 0.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = ""
  shortcut: str = "projection"
  padding: str = "same"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    check_choice(self.padding, PADDINGS, "padding")
    if self.shortcut not in SHORTCUTS or (self.shortcut != "projection" and
                                          self.block != "basic"):
      raise ValueError(f"model.shortcut={self.shortcut!r} with model.block={self.block!r}; "
                       f"expected one of {list(SHORTCUTS)} ('zero_pad' with basic blocks only)")
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"model.stage_sizes {tuple(self.stage_sizes)} and model.widths "
                       f"{tuple(self.widths)} must have the same length")
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    x = _with_channels(x, self.ndim).astype(self.dtype)
    if self.stem == "cifar":
      x = conv_lib.Conv(self.widths[0], (3,) * self.ndim, padding="SAME", use_bias=False,
                        dtype=self.dtype, param_dtype=self.param_dtype, name="stem")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    elif self.stem == "imagenet":
      x = conv_lib.Conv(self.widths[0], (7,) * self.ndim, strides=(2,) * self.ndim,
                        padding=[(3, 3)] * self.ndim, use_bias=False, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="stem")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3,) * self.ndim, strides=(2,) * self.ndim,
                      padding=[(1, 1)] * self.ndim)
    else:
      raise ValueError(f"model.stem={self.stem!r}; expected 'cifar' or 'imagenet'")
    if self.block not in BLOCKS:
      raise ValueError(f"model.block={self.block!r}; expected one of {sorted(BLOCKS)}")
    residual = maybe_remat(BLOCKS[self.block], self.remat, policy=self.remat_policy)
    extra = {"shortcut": self.shortcut} if self.block == "basic" else {}
    extra["padding"] = self.padding
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(blocks):
        x = residual(width, 2 if (i > 0 and j == 0) else 1, self.ndim, self.kernel_size,
                     norm, self.dtype, self.param_dtype, **extra, name=f"stage{i}_block{j}")(x)
    x = x.mean(axis=tuple(range(1, 1 + self.ndim)))
    self.sow("intermediates", "features", x)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="head")(x)


# He et al. 2016's CIFAR-10 ResNets (section 4.2): 6n+2 layers, option-A shortcuts.
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), widths=(16, 32, 64),
                             shortcut="zero_pad")
ResNet56 = functools.partial(ResNet, stage_sizes=(9, 9, 9), widths=(16, 32, 64),
                             shortcut="zero_pad")
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                             stem="imagenet")
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                             stem="imagenet", block="bottleneck")
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1), widths=(4, 8))
