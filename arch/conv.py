"""Convolutions without input dilation, for XLA:CPU.

XLA:CPU runs stride-1 convolutions, and the forward pass and kernel gradient of strided ones, in
library kernels; a convolution whose input is dilated falls to a generic loop several times
slower for the same FLOPs (`python -m benchmarks.conv_speed`: 7-15x at the DCGAN's sizes). Two
such convolutions come up in training:
- a transposed convolution (`ConvTranspose`, a decoder's or a generator's upsampling) is an
  input-dilated convolution in its forward pass, and
- the input gradient of a strided convolution is a transposed convolution of the output
  gradient.
`conv_general_dilated` computes the same function as `jax.lax.conv_general_dilated` without
them: an input-dilated convolution becomes s^d stride-1 convolutions, one per output phase with
the kernel taps that land on that phase, interleaved (depth-to-space); a strided convolution
keeps XLA's forward pass and kernel gradient and gets its input gradient that way (a
`jax.custom_vjp`, itself differentiable, for penalties on input gradients such as R1). Both are
exact rearrangements of the same sums. A transposed convolution below `MIN_REWRITE_MACS`
multiply-adds stays with XLA, whose loop is then the faster. A small strided convolution in
training (differentiated) is instead a product with its patch matrix (im2col), and so are its
gradients: the patch matrix's transpose times the output gradient is the kernel gradient, and
the output gradient times the kernel, scattered back over the patches (col2im), the input
gradient; for small layers and few input channels (`IM2COL_MACS`) these are the faster.
Undifferentiated (evaluation, inference), XLA's forward convolution is the faster. Other cases
(kernel dilation, feature groups, layouts other than channels-last, a preferred element type)
and every backend other than CPU go to `jax.lax.conv_general_dilated` unchanged.

`Conv` and `ConvTranspose` are flax's modules (same parameters, initialisation and outputs)
computing through it.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arch import common

Pads = Sequence[tuple[int, int]]

# A transposed (input-dilated) convolution with fewer multiply-adds (output elements x kernel taps
# x input channels) stays with XLA: its generic loop then takes well under a millisecond, less
# than the phase convolutions and their interleaving (`benchmarks.conv_speed`: a 64-to-1-channel
# generator layer at 4.2M multiply-adds is 3x faster in jax.lax, a 64-to-32 decoder layer at 19M
# 3x slower; the DCGAN step 14.1 -> 13.1 ms and the VAE's 1.95 -> 1.61 ms with this bound).
# Strided convolutions are always rewritten: the MNIST-1D CNN's small ones gain too.
MIN_REWRITE_MACS = 10_000_000
# A differentiated strided convolution is a product with its patch matrix (batch x output
# positions rows, kernel taps x input channels columns; im2col), and so are its gradients, when
# it has at most IM2COL_MACS multiply-adds (XLA's per-convolution cost then dominates), or at most
# IM2COL_CHANNELS input channels (an image's or a signal's: XLA's kernel gradient then contracts,
# and its input gradient's phase convolutions produce, so few channels that they run at their
# slowest) with at most IM2COL_ELEMENTS patch-matrix elements (its memory: 32 MB in float32).
# `python -m benchmarks.conv_speed --training` (benchmarks/README.md), forward and both
# gradients: 1.19-1.91x faster for the MNIST-1D CNN's layers (0.2-1.9M multiply-adds),
# 1.34-2.51x for 1-3 input channels up to 6.3M elements; 0.89-1.08x at 4.7-9.4M multiply-adds and
# 32-64 channels (0.88x in another run), 0.48-0.69x for the larger 3x3 and 4x4 layers.
IM2COL_MACS = 4_000_000
IM2COL_CHANNELS = 4
IM2COL_ELEMENTS = 8_000_000


def _explicit_pads(padding: Any, spatial: Sequence[int], kernel: Sequence[int],
                   strides: Sequence[int], lhs_dilation: Sequence[int]) -> list[tuple[int, int]]:
  if isinstance(padding, str):
    dilated = [(n - 1) * d + 1 for n, d in zip(spatial, lhs_dilation)]
    return list(lax.padtype_to_pads(dilated, kernel, strides, padding))
  return [tuple(p) for p in padding]


def _channels_last(dimension_numbers: Any, ndim: int) -> bool:
  """Whether `dimension_numbers` is flax's layout: (N, spatial..., C), (spatial..., I, O)."""
  if dimension_numbers is None:
    return False
  dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  spatial = tuple(range(1, ndim - 1))
  return (dn.lhs_spec == (0, ndim - 1) + spatial and dn.out_spec == dn.lhs_spec
          and dn.rhs_spec == (ndim - 1, ndim - 2) + tuple(range(ndim - 2)))


def _pad(x: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """x (B, *spatial, C) zero-padded by `pads` ((low, high) per spatial axis; negative crops)."""
  if not any(lo or hi for lo, hi in pads):
    return x
  cfg = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _conv1(x: jnp.ndarray, w: jnp.ndarray, pads: Pads, **kw: Any) -> jnp.ndarray:
  """A stride-1 channels-last convolution (negative pads crop)."""
  nd = x.ndim - 2
  return lax.conv_general_dilated(_pad(x, pads), w, (1,) * nd, [(0, 0)] * nd,
                                  dimension_numbers=_spec(nd), **kw)


def _dilated_out(spatial: Sequence[int], kernel: Sequence[int], lhs_dilation: Sequence[int],
                 pads: Pads) -> list[int]:
  """Output sizes of a stride-1 convolution of the input dilated by `lhs_dilation`, padded."""
  return [(n - 1) * s + lo + hi - k + 2 for n, s, (lo, hi), k in
          zip(spatial, lhs_dilation, pads, kernel)]


def dilated(x: jnp.ndarray, w: jnp.ndarray, lhs_dilation: Sequence[int], pads: Pads,
            **kw: Any) -> jnp.ndarray:
  """A stride-1 convolution of the input dilated by `lhs_dilation` (a transposed convolution)
  as one stride-1 convolution of the undilated input per output phase, interleaved.

  With xd the dilated, padded input (pad lo a), y[o] = sum_t w[t] xd[o + t - a] is non-zero only
  where o + t - a = s j. For the phase o = s q + r the taps are t = t0 + s u with
  t0 = (a - r) mod s, and they read x[q + u + c] with c = (r + t0 - a) / s. Every phase computes
  ceil(out / s) outputs; the interleaved result is cropped to `out`.
  """
  nd = x.ndim - 2
  spatial, kernel = x.shape[1:-1], w.shape[:nd]
  out = _dilated_out(spatial, kernel, lhs_dilation, pads)
  q = [-(-o // s) for o, s in zip(out, lhs_dilation)]
  phases = []
  for r in np.ndindex(*lhs_dilation):
    sub, ppads = w, []
    for i, (ri, s, (a, _), k, n, qi) in enumerate(zip(r, lhs_dilation, pads, kernel, spatial, q)):
      t0 = (a - ri) % s
      taps = len(range(t0, k, s))
      if taps == 0:
        break
      sub = lax.slice_in_dim(sub, t0, t0 + s * (taps - 1) + 1, s, axis=i)
      c = (ri + t0 - a) // s
      # output q reads x[q + u + c] for u < taps: pad lo by -c, hi so that qi outputs remain
      ppads.append((-c, qi + taps + c - n - 1))
    else:
      phases.append(_conv1(x, sub, ppads, **kw))
      continue
    phases.append(jnp.zeros((x.shape[0],) + tuple(q) + (w.shape[-1],), x.dtype))
  # (s0, s1, ..., B, q0, q1, ..., O) -> (B, q0, s0, q1, s1, ..., O), cropped to `out`
  y = jnp.stack(phases).reshape(tuple(lhs_dilation) + phases[0].shape)
  order = (nd,) + sum(((nd + 1 + i, i) for i in range(nd)), ()) + (2 * nd + 1,)
  y = y.transpose(order).reshape(
      (x.shape[0],) + tuple(qi * s for qi, s in zip(q, lhs_dilation)) + (w.shape[-1],))
  return y[(slice(None),) + tuple(slice(0, o) for o in out)]


def _spec(nd: int) -> tuple[str, str, str]:
  return {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
          3: ("NDHWC", "DHWIO", "NDHWC")}[nd]


def _out_sizes(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               pads: Pads) -> list[int]:
  """Output sizes of a strided convolution of `spatial` sizes, padded by `pads`."""
  return [(n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(spatial, kernel, strides, pads)]


def _patches(x: jnp.ndarray, kernel: Sequence[int], strides: Sequence[int],
             pads: Pads) -> jnp.ndarray:
  """The im2col matrix of a strided channels-last convolution: (batch x output positions,
  kernel taps x input channels), taps in row-major order then channels (the kernel's
  (taps..., I, O) layout reshaped to (taps x I, O))."""
  xp = _pad(x, pads)
  out = _out_sizes(x.shape[1:-1], kernel, strides, pads)
  cols = [lax.slice(xp, (0,) + t + (0,),
                    (xp.shape[0],) + tuple(ti + s * (o - 1) + 1
                                           for ti, s, o in zip(t, strides, out)) + (xp.shape[-1],),
                    (1,) + tuple(strides) + (1,))
          for t in np.ndindex(*kernel)]
  p = cols[0] if len(cols) == 1 else jnp.stack(cols, axis=-2)  # (B, out..., [taps,] I)
  return p.reshape(x.shape[0] * math.prod(out), len(cols) * x.shape[-1])


def _use_im2col(x: jnp.ndarray, w: jnp.ndarray, strides: Sequence[int], pads: Pads) -> bool:
  """Whether the differentiated convolution goes through its patch matrix (IM2COL_*)."""
  out = _out_sizes(x.shape[1:-1], w.shape[:x.ndim - 2], strides, pads)
  elements = x.shape[0] * math.prod(out) * math.prod(w.shape[:-1])
  return (elements * w.shape[-1] <= IM2COL_MACS
          or (x.shape[-1] <= IM2COL_CHANNELS and elements <= IM2COL_ELEMENTS))


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def strided(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, ...],
            pads: tuple[tuple[int, int], ...], precision: Any = None) -> jnp.ndarray:
  """A strided channels-last convolution: XLA's own forward; differentiated, a product with its
  patch matrix where that is small (module docstring), else XLA's forward and kernel gradient
  and the input gradient (a transposed convolution of the output gradient) through `dilated`."""
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_spec(x.ndim - 2),
                                  precision=precision)


def _strided_fwd(x, w, strides, pads, precision):
  if not _use_im2col(x, w, strides, pads):
    return strided(x, w, strides, pads, precision), (x, w, None)
  nd = x.ndim - 2
  p = _patches(x, w.shape[:nd], strides, pads)
  y = lax.dot_general(p, w.reshape(-1, w.shape[-1]), (((1,), (0,)), ((), ())),
                      precision=precision)
  out = _out_sizes(x.shape[1:-1], w.shape[:nd], strides, pads)
  return y.reshape((x.shape[0], *out, w.shape[-1])).astype(x.dtype), (x, w, p)


def _strided_bwd(strides, pads, precision, residuals, dy):
  x, w, p = residuals
  nd = x.ndim - 2
  if p is not None:  # the patch matrix of the forward pass
    dy2 = dy.reshape(-1, dy.shape[-1])  # (B x output positions, O)
    dw = lax.dot_general(p, dy2, (((0,), (0,)), ((), ())), precision=precision)
    dcols = lax.dot_general(dy2, w.reshape(-1, w.shape[-1]), (((1,), (1,)), ((), ())),
                            precision=precision)
    # the patch matrix is linear in x: its transpose scatters the columns back (col2im)
    col2im = jax.linear_transpose(partial(_patches, kernel=w.shape[:nd], strides=strides,
                                          pads=pads), x)
    return col2im(dcols.astype(x.dtype))[0], dw.reshape(w.shape).astype(w.dtype)
  _, w_vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      x, w, strides, pads, dimension_numbers=_spec(nd), precision=precision), w)
  # dx[i] = sum_t w[t] dyd[i + lo - t] (dyd: dy dilated by the strides): a stride-1 convolution
  # of dyd with the kernel reversed and its in/out channels swapped, padded lo k - 1 - lo.
  w_t = jnp.swapaxes(lax.rev(w, tuple(range(nd))), -1, -2)
  t_pads = []
  for n, m, k, s, (lo, _) in zip(x.shape[1:-1], dy.shape[1:-1], w.shape[:nd], strides, pads):
    t_lo = k - 1 - lo
    t_pads.append((t_lo, n + k - 1 - (s * (m - 1) + 1) - t_lo))
  dx = dilated(dy, w_t, strides, t_pads, precision=precision)
  return dx.astype(x.dtype), w_vjp(dy)[0]


strided.defvjp(_strided_fwd, _strided_bwd)


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """`jax.lax.conv_general_dilated`, computed with stride-1 convolutions on CPU (module
  docstring) where the layout is channels-last and there is no kernel dilation or grouping."""
  nd = lhs.ndim - 2
  strides = tuple(window_strides)
  lhs_dilation = tuple(lhs_dilation or (1,) * nd)
  rhs_dilation = tuple(rhs_dilation or (1,) * nd)
  kw = dict(precision=precision, preferred_element_type=preferred_element_type)
  plain = lambda: lax.conv_general_dilated(  # noqa: E731
      lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, **kw)
  if (common.target_platform() != "cpu" or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None or any(d != 1 for d in rhs_dilation)
      or not 1 <= nd <= 3 or not _channels_last(dimension_numbers, lhs.ndim)
      or (all(s == 1 for s in strides) and all(d == 1 for d in lhs_dilation))
      or (any(s != 1 for s in strides) and any(d != 1 for d in lhs_dilation))):
    return plain()
  kernel = rhs.shape[:nd]
  pads = _explicit_pads(padding, lhs.shape[1:-1], kernel, strides, lhs_dilation)
  if any(s != 1 for s in strides):
    return strided(lhs, rhs, strides, tuple(tuple(p) for p in pads), precision)
  out = _dilated_out(lhs.shape[1:-1], kernel, lhs_dilation, pads)
  macs = lhs.shape[0] * math.prod(out) * rhs.shape[-1] * math.prod(kernel) * lhs.shape[-1]
  if macs < MIN_REWRITE_MACS:
    return plain()
  return dilated(lhs, rhs, lhs_dilation, pads, precision=precision)


def conv_transpose(lhs: jnp.ndarray, rhs: jnp.ndarray, strides: Sequence[int], padding: Any,
                   **kw: Any) -> jnp.ndarray:
  """`jax.lax.conv_transpose` (channels-last, `transpose_kernel=False`) through
  `conv_general_dilated`: the same padding rule, the input dilated by the strides."""
  nd = lhs.ndim - 2
  kernel = rhs.shape[:nd]
  if isinstance(padding, str):
    pads = []
    for k, s in zip(kernel, strides):
      if padding.upper() == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else int(np.ceil(total / 2))
      elif padding.upper() == "VALID":
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
      else:
        raise ValueError(f"padding={padding!r}; expected 'SAME', 'VALID' or (lo, hi) pairs")
      pads.append((lo, total - lo))
  else:
    pads = [tuple(p) for p in padding]
  return conv_general_dilated(lhs, rhs, (1,) * nd, pads, lhs_dilation=tuple(strides),
                              dimension_numbers=_spec(nd), **kw)


class Conv(nn.Conv):
  """`flax.linen.Conv` computed by `conv_general_dilated` (same parameters and outputs)."""
  conv_general_dilated: Any = staticmethod(conv_general_dilated)


class ConvTranspose(nn.Module):
  """`flax.linen.ConvTranspose` (channels-last, `transpose_kernel=False`, string or explicit
  padding) computed by `conv_transpose`: the same parameter names, shapes and initialisers."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: Any = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    kernel_size = tuple(self.kernel_size)
    strides = tuple(self.strides or (1,) * len(kernel_size))
    kernel = self.param("kernel", self.kernel_init,
                        kernel_size + (inputs.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, strides, self.padding, precision=self.precision)
    if bias is not None:
      y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y
