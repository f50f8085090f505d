"""XLA:CPU's reductions as matrix-vector products, the variants of `benchmarks.step_variants`
that swap a reduction for a dot (XLA:CPU's dots are threaded Eigen kernels; its reductions are
reduce-window trees, 12-17% of the LM's op time): LayerNorm's and GroupNorm's statistics, and
every gradient that sums a broadcast over the batch (biases, norm scales, learned positions).
None measured faster (docs/speed_attempts.md, items 9, 12, 13); kept so that the record can be
rerun.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
  old = getattr(module, name)
  setattr(module, name, value)
  try:
    yield
  finally:
    setattr(module, name, old)


@contextlib.contextmanager
def patched_item(table: dict, key: Any, value: Any) -> Iterator[None]:
  old = table[key]
  table[key] = value
  try:
    yield
  finally:
    table[key] = old


def layernorm() -> contextlib.AbstractContextManager:
  """LayerNorm's mean and variance over the features as matrix-vector products with a vector of
  1/H (XLA:CPU's dots, threaded) rather than reductions (its reduce-window trees); the same
  parameters ("scale", "bias")."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from arch import transformer_stack

  class DotLayerNorm(nn.Module):
    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
      h = x.shape[-1]
      x32 = x.astype(jnp.float32)
      mean_of = jnp.full((h,), 1.0 / h, jnp.float32)
      centred = x32 - (x32 @ mean_of)[..., None]
      y = centred * jax.lax.rsqrt((centred * centred) @ mean_of + self.epsilon)[..., None]
      scale = self.param("scale", nn.initializers.ones, (h,), self.param_dtype)
      bias = self.param("bias", nn.initializers.zeros, (h,), self.param_dtype)
      return (y * scale + bias).astype(self.dtype or x.dtype)

  layer = transformer_stack.norm_layer

  def norm_layer(kind: str, kernel: str = "xla") -> Any:
    return DotLayerNorm if kind == "layer" else layer(kind, kernel)
  return patched(transformer_stack, "norm_layer", norm_layer)


def groupnorm() -> contextlib.AbstractContextManager:
  """The UNet's GroupNorm with its per-channel means over the positions as matrix-vector products
  with a vector of 1/N (XLA:CPU's dots, threaded; its reductions are reduce-window trees, 12% of
  the UNet's op time and 838 of its 3,600 ops), then the small per-group mean; centred variance;
  the same parameters ("scale", "bias")."""
  import types

  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from arch import unet

  class DotGroupNorm(nn.Module):
    num_groups: int = 32
    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
      b, c, g = x.shape[0], x.shape[-1], self.num_groups
      flat = x.astype(jnp.float32).reshape(b, -1, c)
      avg = jnp.full((flat.shape[1],), 1.0 / flat.shape[1], jnp.float32)

      def group_mean(t):
        per_channel = jnp.einsum("bnc,n->bc", t, avg).reshape(b, g, c // g)
        per_group = jnp.mean(per_channel, axis=-1, keepdims=True)
        return jnp.broadcast_to(per_group, per_channel.shape).reshape(b, 1, c)

      centred = flat - group_mean(flat)
      y = (centred * jax.lax.rsqrt(group_mean(centred * centred) + self.epsilon)).reshape(x.shape)
      scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
      bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
      return (y * scale + bias).astype(self.dtype or x.dtype)

  names = {k: getattr(nn, k) for k in dir(nn) if not k.startswith("__")}
  return patched(unet, "nn", types.SimpleNamespace(**{**names, "GroupNorm": DotGroupNorm}))


def column_sums(min_rows: int = 256, as_rows: bool = False,
                kernel: bool = False) -> contextlib.AbstractContextManager:
  """Every gradient that sums a broadcast over its leading axes (biases, norm scales, learned
  positions) as a product with a vector of ones (XLA:CPU's dots) instead of a reduction (its
  reduce-window trees): jax's transpose of `broadcast_in_dim`, swapped while tracing. With
  `as_rows`, still a reduction, but over the rows of the gradient flattened to 2-D behind an
  optimisation barrier: XLA's simplifier would otherwise fold the reshape away, and its tree
  rewriter then sums a (B, T, D) gradient over B and T in one reduce-window of B x 32 rows a
  window (strided: 686 us for (32, 128, 384) against 146 us for the (4096, 384) view summed 32
  rows at a time, `python -m benchmarks.op_speed`)."""
  import math

  import jax
  import jax.numpy as jnp
  from jax._src import ad_util
  from jax._src.interpreters import ad
  from jax._src.lax import lax as lax_internal

  from arch import cpu_dense, cpu_kernels

  if kernel:
    cpu_kernels.ensure()
  rule = lax_internal._broadcast_in_dim_transpose_rule
  unbroadcast = lax_internal._unbroadcast

  def column_sum(x, lead: int, out_shape):
    """`x` summed over its `lead` leading axes as a product with ones, or None."""
    rows = math.prod(x.shape[:lead])
    if lead == 0 or rows < min_rows or not jnp.issubdtype(x.dtype, jnp.floating):
      return None
    if kernel and x.dtype == jnp.float32:
      return cpu_dense.column_sum(x.reshape(rows, -1)).reshape(out_shape)
    if as_rows:
      return jax.lax.optimization_barrier(x.reshape(rows, -1)).sum(0).reshape(out_shape)
    return (jnp.ones((rows,), x.dtype) @ x.reshape(rows, -1)).reshape(out_shape)

  def as_dot(ct, operand, shape, broadcast_dimensions, sharding):
    if isinstance(operand, ad.UndefinedPrimal) and not isinstance(ct, ad_util.Zero):
      kept = [d for d, n in zip(broadcast_dimensions, operand.aval.shape) if n != 1]
      lead = len(shape) - len(kept)
      if kept == list(range(lead, len(shape))):
        summed = column_sum(ct, lead, operand.aval.shape)
        if summed is not None:
          return [summed]
    return rule(ct, operand, shape=shape, broadcast_dimensions=broadcast_dimensions,
                sharding=sharding)

  def unbroadcast_as_dot(aval, x):
    shape = getattr(aval, "shape", None)
    if shape and len(shape) == x.ndim and tuple(shape) != x.shape:
      differ = [i for i, (a, b) in enumerate(zip(x.shape, shape)) if a != b]
      if differ == list(range(len(differ))):
        summed = column_sum(x, len(differ), shape)
        if summed is not None:
          return summed
    return unbroadcast(aval, x)

  @contextlib.contextmanager
  def swapped() -> Iterator[None]:
    # broadcast_in_dim's transpose, and the implicit size-1 broadcasting of lax's binary ops
    # (a bias added by flax's Dense, a scale multiplied by its LayerNorm) that jax's
    # transpose rules undo with `_unbroadcast`
    with patched_item(ad.primitive_transposes, lax_internal.broadcast_in_dim_p, as_dot), \
        patched(lax_internal, "_unbroadcast", unbroadcast_as_dot):
      yield
  return swapped()



def dense_sums_by_xla() -> contextlib.AbstractContextManager:
  """`arch.cpu_dense`'s layers with their bias gradients summed by XLA's reduce over the
  flattened rows instead of the compiled kernel (with `model.dense_kernel="cpu"`)."""
  from arch import cpu_dense

  return patched(cpu_dense, "column_sum", lambda x: x.sum(0))
