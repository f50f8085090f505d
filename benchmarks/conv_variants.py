"""Step variants that compute the stride-1 convolutions' gradients another way
(`benchmarks.step_variants`): timing only, the same values up to float rounding.

- `weight_grad_as_dots`: a stride-1 channels-last convolution's kernel gradient as one dot per
  kernel tap, dW[i, j] = x_pad[:, i:i+H, j:j+W, :]^T dy over the batch and positions, instead of
  XLA:CPU's backward-filter convolution (Eigen's patch packing around the matmul microkernel,
  docs/speed_kernels.md item 16). The input gradient stays XLA's.
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from arch import conv as conv_lib
from benchmarks.reductions_as_dots import patched

_CONV = lax.conv_general_dilated  # XLA's, before any patch


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jnp.ndarray, w: jnp.ndarray, pads: tuple) -> jnp.ndarray:
  return _CONV(x, w, (1,) * (x.ndim - 2), pads, dimension_numbers=conv_lib._spec(x.ndim - 2))


def _fwd(x, w, pads):
  return _conv(x, w, pads), (x, w)


def _bwd(pads, residuals, dy):
  x, w = residuals
  dx = jax.vjp(lambda x_: _CONV(x_, w, (1,) * (x.ndim - 2), pads,
                                dimension_numbers=conv_lib._spec(x.ndim - 2)), x)[1](dy)[0]
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  taps = [jnp.einsum("...c,...o->co", xp[(slice(None),) + tuple(
      slice(i, i + n) for i, n in zip(index, dy.shape[1:-1]))], dy)
      for index in itertools.product(*(range(k) for k in w.shape[:-2]))]
  return dx, jnp.stack(taps).reshape(w.shape)


_conv.defvjp(_fwd, _bwd)


def weight_grad_as_dots() -> contextlib.AbstractContextManager:
  """`lax.conv_general_dilated`'s stride-1, undilated, ungrouped channels-last calls (the
  UNet's 3x3 and 1x1 convolutions, through `arch.conv`) through `_conv` (module docstring)."""
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
           dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
           preferred_element_type=None):
    nd = lhs.ndim - 2
    spec = conv_lib._spec(nd) if 1 <= nd <= 3 else None
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    ours = lax.conv_dimension_numbers(lhs.shape, rhs.shape, spec) if spec else None
    if (numbers != ours or any(s != 1 for s in window_strides)
        or any(d != 1 for d in lhs_dilation or ()) or any(d != 1 for d in rhs_dilation or ())
        or feature_group_count != 1 or batch_group_count != 1 or precision is not None
        or preferred_element_type is not None):
      return _CONV(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, batch_group_count, precision,
                   preferred_element_type)
    if isinstance(padding, str):
      padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:nd], (1,) * nd, padding)
    return _conv(lhs, rhs, tuple(tuple(p) for p in padding))
  return patched(lax, "conv_general_dilated", conv)
