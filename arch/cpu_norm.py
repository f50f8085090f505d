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


def _batch_spec(arg_shapes) -> Any:
  return (tuple(getattr(arg_shapes[0].sharding, "spec", ())) + (None,))[0]


def _partitioned(call: Callable, operands: str, results: str, summed: tuple[int, ...] = ()):
  """`call` as a `custom_partitioning` function sharded by the batch (each device normalises its
  own examples or rows; the results in `summed`, parameter gradients, are added over the batch's
  mesh axes). `operands`, `results`: each array's dimensions (b batch or rows, p positions,
  c channels, g groups), comma separated."""
  from jax.experimental.custom_partitioning import custom_partitioning
  from jax.sharding import NamedSharding, PartitionSpec

  ins, outs = operands.split(","), results.split(",")

  def sharding(mesh, batch, dims):
    return NamedSharding(mesh, PartitionSpec(*(batch if d == "b" else None for d in dims)))

  def partition(mesh, arg_shapes, result_shape):
    batch = _batch_spec(arg_shapes)
    names = () if batch is None else (batch if isinstance(batch, tuple) else (batch,))

    def lower(*args):
      out = call(*args)
      return tuple(jax.lax.psum(o, names) if i in summed and names else o
                   for i, o in enumerate(out))
    return (mesh, lower, tuple(sharding(mesh, batch, d) for d in outs),
            tuple(sharding(mesh, batch, d) for d in ins))

  def infer(mesh, arg_shapes, result_shape):
    return tuple(sharding(mesh, _batch_spec(arg_shapes), d) for d in outs)

  fn = custom_partitioning(call)
  fn.def_partition(partition, infer_sharding_from_operands=infer,
                   sharding_rule=f"{', '.join(' '.join(d) for d in ins)} -> "
                                 f"{', '.join(' '.join(d) for d in outs)}",
                   need_replication_factors=tuple(d for d in "pcg" if d in operands + results))
  return fn


def _mapped(fn: Callable, fold: bool) -> Callable:
  """`fn` with a vmap rule (custom_partitioning has none): with `fold`, the mapped axis folded
  into the batch where only batch-led operands are mapped (every array's first axis); otherwise
  (the backward pass, whose parameter gradients stay per mapped example) one call per index."""
  @jax.custom_batching.custom_vmap
  def mapped(*args):
    return fn(*args)

  @mapped.def_vmap
  def _(axis_size, in_batched, *args):
    if fold and in_batched[0] and not any(in_batched[1:]):
      outs = mapped(args[0].reshape(-1, *args[0].shape[2:]), *args[1:])
      return tuple(o.reshape(axis_size, -1, *o.shape[1:]) for o in outs), (True,) * len(outs)
    full = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, b in zip(args, in_batched)]
    outs = jax.lax.map(lambda a: mapped(*a), full)
    return outs, (True,) * len(outs)

  return mapped


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

  return (_mapped(_partitioned(forward, f"{x_dims},c,c", f"{x_dims},{stat_dims},{stat_dims}"),
                  fold=True),
          _mapped(_partitioned(backward, f"{x_dims},c,{stat_dims},{stat_dims},{x_dims}",
                               f"{x_dims},c,c", summed=(1, 2)), fold=False))


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
    try:
      cpu_kernels.ensure()
    except cpu_kernels.KernelUnavailable as e:
      raise ValueError(f"model.norm_kernel='cpu': {e}; expected a machine that builds it, or "
                       "norm_kernel='xla'") from None
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
