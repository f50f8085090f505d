"""Dense layers whose backward pass suits XLA:CPU (`model.dense_kernel="cpu"`): the weight
gradient as one matmul over the rows of the flattened input, the bias gradient by a compiled
column-sum kernel (`arch/kernels/column_sum_cpu.cc`, through XLA's FFI).

jax differentiates flax's Dense on a (B, T, I) input into a weight gradient that contracts B and
T at once, for which XLA:CPU first copies the output's gradient transposed (its producer, a GELU's
derivative, recomputed inside the copy), and a bias gradient summed over B and T by a strided
reduce-window tree (686 us for (32, 128, 384) against PyTorch's 53 us, docs/speed_kernels.md
item 13). Here the layer is one custom-VJP function of the (B*T, I) rows: the same products and
sums, in float32, to rounding (tests/arch/test_cpu_dense.py).

`CpuDense` has flax's `nn.DenseGeneral` parameters (names, shapes, initialisation), so a
checkpoint moves between the two; on GPU and TPU, and for calls the kernel does not cover (no
bias, other dtypes, contracted axes that are not the trailing ones), it computes as flax does.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from arch import common, cpu_kernels

DENSE_KERNELS = ("xla", "cpu")


def _column_sum_call(x: jnp.ndarray) -> jnp.ndarray:
  return jax.ffi.ffi_call("strata_column_sum",
                          jax.ShapeDtypeStruct(x.shape[1:], jnp.float32))(x)


def _column_sum_with_rules() -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The FFI call sharded by rows and columns: under a mesh each device sums its own rows and
  the partial sums are added over the rows' mesh axes (one all-reduce of a (C,) vector). Under
  jax.vmap (per-example gradients) the rows of each example are summed by XLA's reduce."""
  fn = cpu_kernels.partitioned(_column_sum_call, "rc", "c", kept="rc")

  @jax.custom_batching.custom_vmap
  def batched(x):
    return fn(x)

  @batched.def_vmap
  def _(axis_size, in_batched, x):
    return (x.sum(1) if in_batched[0] else jnp.broadcast_to(fn(x), (axis_size, x.shape[1])),
            True)

  return batched


_COLUMN_SUM: list[Callable[[jnp.ndarray], jnp.ndarray]] = []


def column_sum(x: jnp.ndarray) -> jnp.ndarray:
  """float32 `x` (R, C) summed over its rows, (C,), by the compiled kernel; sharded by rows and
  columns under a mesh. Not differentiable (it computes gradients). Call `cpu_kernels.ensure()`
  first (outside jit)."""
  if not _COLUMN_SUM:
    _COLUMN_SUM.append(_column_sum_with_rules())
  return _COLUMN_SUM[0](x)


@jax.custom_vjp
def dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """x @ kernel + bias of float32 rows x (R, I), kernel (I, O) and bias (O,): (R, O)."""
  return x @ kernel + bias


def _dense_fwd(x, kernel, bias):
  return dense(x, kernel, bias), (x, kernel)


def _dense_bwd(residuals, g):
  x, kernel = residuals
  rows = (((0,), (0,)), ((), ()))  # contract the rows: (I, R) @ (R, O)
  return g @ kernel.T, jax.lax.dot_general(x, g, rows), column_sum(g)


dense.defvjp(_dense_fwd, _dense_bwd)


def _reshaped_init(init: Callable, flat: tuple[int, ...]) -> Callable:
  """`init` called with the flat shape and reshaped, as flax's DenseGeneral initialises (the
  fan-in of a (D, N, H) kernel is D)."""
  def wrapped(rng, shape, dtype=jnp.float32):
    value = init(rng, flat, dtype)
    if isinstance(value, meta.AxisMetadata):
      return meta.replace_boxed(value, jnp.reshape(value.unbox(), shape))
    return jnp.reshape(value, shape)
  return wrapped


class CpuDense(nn.Module):
  """flax's `nn.DenseGeneral` (and `nn.Dense`, its case `axis=-1` with an int `features`) over
  the trailing `axis` of the input, with the same parameters, computed on the CPU by `dense`.

  Attributes: as flax's (features: int or tuple; axis: int or tuple of the input's trailing
  axes; no batch_dims)."""

  features: int | tuple[int, ...]
  axis: int | tuple[int, ...] = -1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axis = tuple(sorted(a % inputs.ndim for a in axis))
    contracted = tuple(inputs.shape[a] for a in axis)
    fan_in, fan_out = math.prod(contracted), math.prod(features)
    kernel = self.param("kernel", _reshaped_init(self.kernel_init, (fan_in, fan_out)),
                        contracted + features, self.param_dtype)
    bias = (self.param("bias", _reshaped_init(self.bias_init, (fan_out,)), features,
                       self.param_dtype) if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    kept = inputs.shape[:inputs.ndim - len(axis)]
    trailing = axis == tuple(range(len(kept), inputs.ndim))
    if (common.target_platform() == "cpu" and bias is not None and trailing
        and inputs.dtype == jnp.float32 and self.precision is None):
      cpu_kernels.ensure_for("dense_kernel")
      rows = dense(inputs.reshape(-1, fan_in), kernel.reshape(fan_in, fan_out),
                   bias.reshape(fan_out))
      return rows.reshape(kept + features)
    out = jax.lax.dot_general(inputs, kernel, ((axis, tuple(range(len(axis)))), ((), ())),
                              precision=self.precision)
    return out if bias is None else out + bias


def dense_layer(kernel: str, general: bool = False) -> Any:
  """The dense layer class for `model.dense_kernel` (`DENSE_KERNELS`): flax's `nn.Dense` (or
  `nn.DenseGeneral` with `general`) for "xla", `CpuDense` (the same constructor arguments and
  parameters) for "cpu"."""
  common.check_choice(kernel, DENSE_KERNELS, "dense_kernel")
  if kernel == "cpu":
    return CpuDense
  return nn.DenseGeneral if general else nn.Dense
