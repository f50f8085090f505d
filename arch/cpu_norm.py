"""GroupNorm and LayerNorm on the CPU as compiled kernels (`model.norm_kernel="cpu"`):
`arch/kernels/norm_cpu.cc`, one XLA FFI call for each forward pass and one for each backward
pass, where XLA:CPU runs about 60 small ops for a GroupNorm and 25 for a LayerNorm (reductions as
reduce-window trees, broadcasts, elementwise fusions). A GroupNorm's tasks are its examples, a
LayerNorm's blocks of 128 rows; the statistics are two-pass.

`CpuGroupNorm` and `CpuLayerNorm` have flax's `nn.GroupNorm` and `nn.LayerNorm` parameters
("scale", "bias", (C,)), so a checkpoint moves between them. On GPU and TPU and for other dtypes
they compute as flax does (`reference`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch import common, cpu_kernels

NORM_KERNELS = ("xla", "cpu")


def reference(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, groups: int,
              epsilon: float) -> jnp.ndarray:
  """flax's GroupNorm of x (B, ..., C) as XLA computes it (the mean and the mean of squares); a
  LayerNorm is that of each row (R, 1, C) in one group."""
  b, c = x.shape[0], x.shape[-1]
  g = x.reshape(b, -1, groups, c // groups)
  mean = g.mean((1, 3), keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(g), (1, 3), keepdims=True) - jnp.square(mean), 0.0)
  y = ((g - mean) * jax.lax.rsqrt(var + epsilon)).reshape(x.shape)
  return y * scale + bias


@functools.cache
def _calls(kind: str, groups: int, epsilon: float) -> tuple[Callable, Callable]:
  """The forward and backward calls of `kind` "group" (x (B, N, C), statistics (B, G)) or
  "layer" (x (R, C), statistics (R,))."""
  x_dims, stat_dims = ("bpc", "bg") if kind == "group" else ("bc", "b")

  def forward(x, scale, bias):
    stats = jax.ShapeDtypeStruct(x.shape[:1] + ((groups,) if kind == "group" else ()),
                                 jnp.float32)
    return jax.ffi.ffi_call(f"strata_{kind}_norm_forward",
                            (jax.ShapeDtypeStruct(x.shape, jnp.float32), stats, stats))(
                                x, scale, bias, epsilon=np.float32(epsilon))

  def backward(x, scale, mean, rstd, dy):
    c = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
    return jax.ffi.ffi_call(f"strata_{kind}_norm_backward",
                            (jax.ShapeDtypeStruct(x.shape, jnp.float32), c, c))(
                                x, scale, mean, rstd, dy)

  # sharded by the batch (or rows), the parameter gradients added over it; under vmap the
  # forward pass folds the mapped axis into the batch, the backward pass maps (its parameter
  # gradients stay per example)
  forward_call = cpu_kernels.partitioned(forward, f"{x_dims},c,c",
                                         f"{x_dims},{stat_dims},{stat_dims}", kept="b")
  backward_call = cpu_kernels.partitioned(backward, f"{x_dims},c,{stat_dims},{stat_dims},{x_dims}",
                                          f"{x_dims},c,c", kept="b")
  return (cpu_kernels.vmapped(forward_call, batch_led=(True, False, False), fold=True),
          cpu_kernels.vmapped(backward_call, batch_led=(), fold=False))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def normalized(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, kind: str, groups: int,
               epsilon: float) -> jnp.ndarray:
  """float32 x normalised by the kernel of `kind`: "group", x (B, N, C) over `groups` groups of
  C / groups channels and the N positions; "layer", x (R, C) over each row (`groups` unused).
  Scale and bias (C,). Call `cpu_kernels.ensure()` first (outside jit)."""
  return _calls(kind, groups, epsilon)[0](x, scale, bias)[0]


def _normalized_fwd(x, scale, bias, kind, groups, epsilon):
  y, mean, rstd = _calls(kind, groups, epsilon)[0](x, scale, bias)
  return y, (x, scale, mean, rstd)


def _normalized_bwd(kind, groups, epsilon, residuals, dy):
  x, scale, mean, rstd = residuals
  return _calls(kind, groups, epsilon)[1](x, scale, mean, rstd, dy.astype(jnp.float32))


normalized.defvjp(_normalized_fwd, _normalized_bwd)


class _CpuNorm(nn.Module):
  """The parameters flax's norms create, and the choice between the kernel and `reference`
  (the subclasses declare the fields, in flax's order: `epsilon`, `dtype`, `param_dtype`)."""

  def _normalize(self, x: jnp.ndarray, kind: str, groups: int) -> jnp.ndarray:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    x, scale, bias = nn.dtypes.promote_dtype(x, scale, bias, dtype=self.dtype)
    rows = x.reshape(x.shape[0], -1, c) if kind == "group" else x.reshape(-1, 1, c)
    if common.target_platform() != "cpu" or x.dtype != jnp.float32 or x.ndim < 2:
      return reference(rows, scale, bias, groups, self.epsilon).reshape(x.shape)
    cpu_kernels.ensure_for("norm_kernel")
    if kind == "layer":
      rows = rows.reshape(-1, c)
    return normalized(rows, scale, bias, kind, groups, float(self.epsilon)).reshape(x.shape)


class CpuGroupNorm(_CpuNorm):
  """flax's `nn.GroupNorm(num_groups)` over the channels (last axis) of x (B, ..., C), with its
  parameters, by the compiled kernel on the CPU (float32)."""

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.shape[-1] % self.num_groups:
      raise ValueError(f"GroupNorm of {x.shape[-1]} channels in {self.num_groups} groups: "
                       "expected channels divisible by the groups")
    return self._normalize(x, "group", self.num_groups)


class CpuLayerNorm(_CpuNorm):
  """flax's `nn.LayerNorm` over the last axis of x (..., C), with its parameters, by the
  compiled kernel on the CPU (float32)."""

  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self._normalize(x, "layer", 1)


def layer_norm_class(kernel: str) -> Any:
  """The LayerNorm class for `model.norm_kernel` (`NORM_KERNELS`): flax's `nn.LayerNorm` for
  "xla", `CpuLayerNorm` (the same constructor arguments used here, and parameters) for "cpu"."""
  common.check_choice(kernel, NORM_KERNELS, "norm_kernel")
  return CpuLayerNorm if kernel == "cpu" else nn.LayerNorm


def group_norm_layer(kernel: str) -> Any:
  """The GroupNorm class for `model.norm_kernel` (`NORM_KERNELS`): flax's `nn.GroupNorm` for
  "xla", `CpuGroupNorm` (the same constructor arguments used here, and parameters) for "cpu"."""
  common.check_choice(kernel, NORM_KERNELS, "norm_kernel")
  return CpuGroupNorm if kernel == "cpu" else nn.GroupNorm
