"""GroupNorm on the CPU as a compiled kernel (`model.norm_kernel="cpu"`):
`arch/kernels/group_norm_cpu.cc`, one XLA FFI call for the forward pass and one for the
backward pass, where XLA:CPU runs about 60 small ops (reductions as reduce-window trees,
broadcasts, elementwise fusions) for each GroupNorm, and the UNet has 25. Each example is one task
on XLA's intra-op threads; the statistics are two-pass, summed in double per group.

`CpuGroupNorm` has flax's `nn.GroupNorm` parameters ("scale", "bias", (C,)), so a checkpoint
moves between the two. On GPU and TPU and for other dtypes it computes as flax does
(`reference`).
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
  """flax's GroupNorm of x (B, ..., C) as XLA computes it (the mean and the mean of squares)."""
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
  own examples; the results in `summed`, parameter gradients, are added over the batch's mesh
  axes). `operands`, `results`: each array's dimensions (b batch, p positions, c channels,
  g groups), comma separated."""
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
                   need_replication_factors=("p", "c", "g"))
  return fn


@functools.cache
def _calls(groups: int, epsilon: float):
  def forward(x, scale, bias):
    b, _, c = x.shape
    stats = jax.ShapeDtypeStruct((b, groups), jnp.float32)
    return jax.ffi.ffi_call("strata_group_norm_forward",
                            (jax.ShapeDtypeStruct(x.shape, jnp.float32), stats, stats))(
                                x, scale, bias, epsilon=np.float32(epsilon))

  def backward(x, scale, mean, rstd, dy):
    c = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
    return jax.ffi.ffi_call("strata_group_norm_backward",
                            (jax.ShapeDtypeStruct(x.shape, jnp.float32), c, c))(
                                x, scale, mean, rstd, dy)

  return (_mapped(_partitioned(forward, "bpc,c,c", "bpc,bg,bg"), fold=True),
          _mapped(_partitioned(backward, "bpc,c,bg,bg,bpc", "bpc,c,c", summed=(1, 2)),
                  fold=False))


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, groups: int,
               epsilon: float) -> jnp.ndarray:
  """GroupNorm of float32 x (B, N, C) (N positions), scale and bias (C,), over `groups` groups
  of C / groups channels each: (B, N, C). Call `cpu_kernels.ensure()` first (outside jit)."""
  return _calls(groups, epsilon)[0](x, scale, bias)[0]


def _group_norm_fwd(x, scale, bias, groups, epsilon):
  y, mean, rstd = _calls(groups, epsilon)[0](x, scale, bias)
  return y, (x, scale, mean, rstd)


def _group_norm_bwd(groups, epsilon, residuals, dy):
  x, scale, mean, rstd = residuals
  return _calls(groups, epsilon)[1](x, scale, mean, rstd, dy.astype(jnp.float32))


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


class CpuGroupNorm(nn.Module):
  """flax's `nn.GroupNorm(num_groups)` over the channels (last axis) of x (B, ..., C), with its
  parameters, by the compiled kernel on the CPU (float32)."""

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm of {c} channels in {self.num_groups} groups: expected "
                       "channels divisible by the groups")
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    x, scale, bias = nn.dtypes.promote_dtype(x, scale, bias, dtype=self.dtype)
    if common.target_platform() != "cpu" or x.dtype != jnp.float32 or x.ndim < 2:
      return reference(x, scale, bias, self.num_groups, self.epsilon)
    try:
      cpu_kernels.ensure()
    except cpu_kernels.KernelUnavailable as e:
      raise ValueError(f"model.norm_kernel='cpu': {e}; expected a machine that builds it, or "
                       "norm_kernel='xla'") from None
    rows = x.reshape(x.shape[0], -1, c)
    return group_norm(rows, scale, bias, self.num_groups, float(self.epsilon)).reshape(x.shape)


def group_norm_layer(kernel: str) -> Any:
  """The GroupNorm class for `model.norm_kernel` (`NORM_KERNELS`): flax's `nn.GroupNorm` for
  "xla", `CpuGroupNorm` (the same constructor arguments used here, and parameters) for "cpu"."""
  common.check_choice(kernel, NORM_KERNELS, "norm_kernel")
  return CpuGroupNorm if kernel == "cpu" else nn.GroupNorm
