"""Multi-head attention through `dot_product_attention`, with rotary positions and a key/value
cache for autoregressive decoding.

Shapes: B batch, T query steps, S key steps, D model width, N heads, H = D // N head width.
`dot_product_attention` takes (B, T, N, H) queries and (B, S, N, H) keys and values. On GPU and
TPU it is `jax.nn.dot_product_attention`, which may pick a fused (cuDNN) kernel; on CPU, the
same softmax(QK^T/sqrt(H))V with a hand-written backward pass and causal blocks.

Attention weights are not returned by the fused kernel. When the caller makes `intermediates`
mutable (`model.apply(..., mutable=["intermediates"])`), the module also computes them explicitly
and sows them as `intermediates/attention_weights`, (B, N, T, S), for visualisation.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch import common, cpu_attention, cpu_kernels
from arch.cpu_dense import dense_layer


def sinusoidal(positions: jnp.ndarray, dim: int, base: float = 10000.0) -> jnp.ndarray:
  """Vaswani et al.'s encoding: (..., dim) with sin at even and cos at odd features.

  PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(p / base^(2i/dim)).
  """
  if dim % 2:
    raise ValueError(f"sinusoidal positions need an even width; got {dim}")
  inv = base ** (-np.arange(0, dim, 2, dtype=np.float32) / dim)     # (dim/2,)
  angles = positions[..., None].astype(jnp.float32) * inv
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], dim)


def sincos2d(rows: int, cols: int, width: int, temperature: float = 10_000.0) -> jnp.ndarray:
  """(rows * cols, width) fixed 2-D position embeddings of a row-major patch grid: features
  [sin(col w), cos(col w), sin(row w), cos(row w)] with w = temperature^(-k / (width/4 - 1)),
  k = 0 .. width/4 - 1 (big_vision's `posemb_sincos_2d`)."""
  if width % 4:
    raise ValueError(f"sincos2d positions need a width divisible by 4; got {width}")
  row, col = np.mgrid[:rows, :cols]
  omega = 1.0 / temperature ** (np.arange(width // 4) / max(width // 4 - 1, 1))
  y, x = np.outer(row.ravel(), omega), np.outer(col.ravel(), omega)
  return jnp.asarray(np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], 1),
                     jnp.float32)


def rotary_frequencies(h: int, base: float = 10000.0, scaling: tuple[float, ...] = ()
                       ) -> np.ndarray:
  """(H/2,) angular frequencies base^(-2j/H) of rotary positions on a head of width `h`;
  `scaling` = (factor, low_freq_factor, high_freq_factor, original_context) applies Llama 3's
  rescaling: wavelengths longer than original_context / low_freq_factor slowed by `factor`,
  shorter than original_context / high_freq_factor kept, those between interpolated
  (transformers' `_compute_llama3_parameters`)."""
  if not scaling:  # float32 arithmetic, as before the scaling existed (the same angles)
    return base ** (-np.arange(0, h, 2, dtype=np.float32) / h)
  inv = base ** (-np.arange(0, h, 2, dtype=np.float64) / h)
  factor, low, high, context = scaling
  wavelength = 2 * np.pi / inv
  smooth = (context / wavelength - low) / (high - low)
  scaled = np.where(wavelength > context / low, inv / factor, inv)
  between = (wavelength <= context / low) & (wavelength >= context / high)
  return np.where(between, (1 - smooth) * scaled / factor + smooth * scaled,
                  scaled).astype(np.float32)


def rotary(x: jnp.ndarray, positions: jnp.ndarray, base: float = 10000.0,
           scaling: tuple[float, ...] = ()) -> jnp.ndarray:
  """Rotary position embedding (Su et al. 2021, the "rotate half" layout of GPT-NeoX/LLaMA).

  x: (B, T, N, H) queries or keys; positions: (T,) or (B, T) absolute positions. Feature pairs
  (j, j + H/2) are rotated by the angle position * base^(-2j/H) (`rotary_frequencies`, with
  `scaling`), so q.k depends only on the positions' difference.
  """
  h = x.shape[-1]
  if h % 2:
    raise ValueError(f"rotary positions need an even head width; got {h}")
  inv = rotary_frequencies(h, base, tuple(scaling))                  # (H/2,)
  angles = positions[..., None].astype(jnp.float32) * inv            # (..., T, H/2)
  if angles.ndim == 2:
    angles = angles[None]
  cos = jnp.cos(angles)[:, :, None, :]                               # (B|1, T, 1, H/2)
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


# What precision the attention logits QK^T and their softmax are computed in (`model.
# attention_logits`): "float32", as `jax.nn.dot_product_attention` does for any input dtype, or
# "compute", the layer's compute dtype (bfloat16 under `train.precision=bfloat16`), as flax's
# `nn.dot_product_attention` and so big_vision's ViT and the flax examples do. The (B, N, T, S)
# logits are an attention layer's largest tensors: in bfloat16 they move half the bytes (a
# ViT-S/16 step on TPU v5e: 1.25x big_vision's estimated time with float32 logits, 1.03x with
# bfloat16 ones; docs/pod_table.md), at the cost of bfloat16's 8-bit mantissa in the softmax.
ATTENTION_LOGITS = ("float32", "compute")


def logits_dtype(attention_logits: str, compute: Any) -> Any:
  """The dtype `attention_logits` ("float32" or "compute") means for a layer computing in
  `compute`; None where that is float32 (the default path)."""
  common.check_choice(attention_logits, ATTENTION_LOGITS, "attention_logits")
  if attention_logits == "float32" or jnp.dtype(compute) == jnp.float32:
    return None
  return jnp.dtype(compute)


def attention_weights(q: jnp.ndarray, k: jnp.ndarray, mask: jnp.ndarray | None,
                      dtype: Any = None) -> jnp.ndarray:
  """softmax(QK^T / sqrt(H)) with masked logits removed: (B, N, T, S), in `dtype` (default
  float32 or wider)."""
  dtype = jnp.promote_types(q.dtype, jnp.float32) if dtype is None else dtype
  logits = jnp.einsum("btnh,bsnh->bnts", q.astype(dtype), k.astype(dtype))
  logits = logits / np.asarray(np.sqrt(q.shape[-1]), dtype)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  return jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _softmax_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                       mask: jnp.ndarray | None, dtype: Any = None) -> jnp.ndarray:
  """softmax(QK^T / sqrt(H)) V with the weights (in `dtype`, as `attention_weights`) kept for a
  hand-written backward pass."""
  return _softmax_attention_fwd(q, k, v, mask, dtype)[0]


def _softmax_attention_fwd(q, k, v, mask, dtype):
  p = attention_weights(q, k, mask, dtype)                            # (B, N, T, S)
  out = jnp.einsum("bnts,bsnh->btnh", p, v.astype(p.dtype))
  return out.astype(v.dtype), (q, k, v, mask, p, out)


def _softmax_attention_bwd(dtype, residuals, g):
  del dtype  # the weights' own
  # With P = softmax(S), O = P V: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)),
  # dQ = dS K / sqrt(H), dK = dS^T Q / sqrt(H): five matmuls and two passes over (B, N, T, S),
  # where differentiating the forward pass costs several more passes on XLA:CPU.
  q, k, v, mask, p, out = residuals
  dt = p.dtype
  g = g.astype(dt)
  dv = jnp.einsum("bnts,btnh->bsnh", p, g)
  dp = jnp.einsum("btnh,bsnh->bnts", g, v.astype(dt))
  delta = jnp.einsum("btnh,btnh->bnt", g, out)[..., None]
  ds = p * (dp - delta) / float(np.sqrt(q.shape[-1]))  # a Python float keeps p's dtype
  dq = jnp.einsum("bnts,bsnh->btnh", ds, k.astype(dt))
  dk = jnp.einsum("bnts,btnh->bsnh", ds, q.astype(dt))
  mask_grad = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), mask_grad


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def _attention_in(dtype: Any, q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                  mask: jnp.ndarray | None, is_causal: bool) -> jnp.ndarray:
  """softmax(QK^T / sqrt(H)) V with the logits and softmax in `dtype`, as flax's
  `nn.dot_product_attention` computes them (the query scaled first)."""
  q = q / np.asarray(np.sqrt(q.shape[-1]), q.dtype)
  logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=dtype)
  if is_causal:
    lower = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))[None, None]
    mask = lower if mask is None else jnp.logical_and(mask, lower)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bnts,bsnh->btnh", p.astype(v.dtype), v)


# How attention is computed on the CPU (`model.attention_kernel`): "xla", XLA's ops (below); or
# "cpu", the compiled kernel of `arch.cpu_attention` (built on first use; float32 calls without a
# mask other than the causal one: any other call takes XLA's ops). GPU and TPU ignore it.
ATTENTION_KERNELS = ("xla", "cpu")


def _kernel_covers(q, k, v, mask, logits_dtype) -> bool:
  return mask is None and logits_dtype is None and all(
      x.dtype == jnp.float32 for x in (q, k, v))


def dot_product_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                          mask: jnp.ndarray | None = None, is_causal: bool = False,
                          causal_blocks: int = 4, logits_dtype: Any = None,
                          kernel: str = "xla") -> jnp.ndarray:
  """`jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)` (shapes in the
  module docstring); on GPU and TPU that call itself, on CPU an equal computation that is
  faster there (`python -m benchmarks.attention_speed`):
  - the backward pass is written out (`_softmax_attention`) instead of differentiated;
  - causal self-attention splits the queries into `causal_blocks` blocks, each attending only to
    the keys at or before its last position, which skips most of the masked-out products.
  `logits_dtype` (`logits_dtype()`; None: float32, as jax computes them) is the precision of the
  logits and their softmax; on GPU and TPU another one computes as flax does (`_attention_in`).
  `kernel` ("xla" or "cpu", `ATTENTION_KERNELS`): "cpu" computes the calls it covers on the CPU
  with `arch.cpu_attention`'s compiled kernel, raising ValueError where it cannot be built.
  """
  common.check_choice(kernel, ATTENTION_KERNELS, "attention_kernel")
  if common.target_platform() != "cpu":
    if logits_dtype is not None:
      return _attention_in(logits_dtype, q, k, v, mask, is_causal)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
  steps, keys = q.shape[1], k.shape[1]
  if is_causal and steps != keys:
    raise ValueError(f"causal attention of {steps} queries to {keys} keys: expected as many "
                     "keys as queries")
  if kernel == "cpu" and _kernel_covers(q, k, v, mask, logits_dtype):
    cpu_kernels.ensure_for("attention_kernel")
    return cpu_attention.attention(q, k, v, is_causal)
  if mask is not None:
    mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], steps, keys))
  if not is_causal:
    return _softmax_attention(q, k, v, mask, logits_dtype)
  bounds = sorted({round(i * steps / causal_blocks) for i in range(causal_blocks + 1)})
  outs = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    allowed = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]   # (hi - lo, hi)
    block = allowed[None, None]
    if mask is not None:
      block = jnp.logical_and(block, mask[:, :, lo:hi, :hi])
    outs.append(_softmax_attention(q[:, lo:hi], k[:, :hi], v[:, :hi], block, logits_dtype))
  return jnp.concatenate(outs, axis=1)


class MultiHeadAttention(nn.Module):
  """Self-attention of x (B, T, D) onto itself, or cross-attention of x onto `kv` (B, S, D).

  Attributes:
    num_heads: N; D must be divisible by it.
    rotary: apply rotary positions to queries and keys.
    rope_base: the rotary frequency base.
    dropout: on the output projection (train only).
    kernel_init: the query, key, value and output projections' initialiser (None: flax's).
    attention_logits: "float32" or "compute" (`ATTENTION_LOGITS`): the precision of the logits
      and their softmax; "compute" is `dtype`.
    num_kv_heads: key and value heads (grouped-query attention, Ainslie et al. 2023): each
      serves num_heads / num_kv_heads query heads, and the cache holds only them; 0 = num_heads.
    use_bias: biases on the four projections (GPT-2 and ViTs have them, Llama has none).
    qkv_bias: biases on the query, key and value projections even without `use_bias` (Qwen2's:
      none on the output projection).
    attention_kernel: "xla" or "cpu" (`ATTENTION_KERNELS`): on the CPU, the softmax attention by
      XLA's ops or by `arch.cpu_attention`'s compiled kernel.
    dense_kernel: "xla" or "cpu" (`arch.cpu_dense.DENSE_KERNELS`): on the CPU, the projections'
      backward pass by XLA's ops or by `arch.cpu_dense`'s (a compiled bias-gradient kernel).

  Call arguments:
    mask: bool, broadcastable to (B, N, T, S); True where a query may attend to a key.
    kv: (B, S, D), the sequence the keys and values come from (attention pooling's: a learned
      probe attends to the tokens); None: x itself. Not with rotary positions or decoding.
    causal: each step attends to itself and earlier steps only.
    positions: (T,) or (B, T) absolute positions for rotary (default arange(T), or the cache
      index onward when decoding).
    decode: use and update the key/value cache (`cache` collection, made mutable by the
      caller). The cache is created with the shape of the first `init(..., decode=True)` input,
      which sets the longest sequence it can hold; later calls append T steps to it and attend
      causally to everything cached so far.
  """

  num_heads: int
  rotary: bool = False
  rope_base: float = 10000.0
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = None  # the projections' initialiser; None = flax's (LeCun normal)
  attention_logits: str = "float32"
  num_kv_heads: int = 0  # grouped-query attention: key/value heads, each shared by a group
  use_bias: bool = True
  rope_scaling: tuple[float, ...] = ()  # Llama 3's (`rotary_frequencies`)
  qkv_bias: bool = False
  attention_kernel: str = "xla"
  dense_kernel: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None, *, causal: bool = False,
               positions: jnp.ndarray | None = None, decode: bool = False,
               train: bool = False, kv: jnp.ndarray | None = None) -> jnp.ndarray:
    batch, steps, width = x.shape
    if kv is not None and (self.rotary or decode):
      raise ValueError("cross-attention (kv) takes no rotary positions and no cache")
    if width % self.num_heads:
      raise ValueError(f"model width {width} is not divisible by num_heads={self.num_heads}")
    head = width // self.num_heads
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f"model.num_kv_heads={kv_heads} does not divide num_heads="
                       f"{self.num_heads}")

    inits = {} if self.kernel_init is None else {"kernel_init": self.kernel_init}

    dense = dense_layer(self.dense_kernel, general=True)

    def proj(name, heads):
      return dense((heads, head), dtype=self.dtype, param_dtype=self.param_dtype,
                             use_bias=self.use_bias or self.qkv_bias, **inits, name=name)
    q = proj("query", self.num_heads)(x)                                   # (B, T, N, H)
    source = x if kv is None else kv
    k, v = proj("key", kv_heads)(source), proj("value", kv_heads)(source)  # (B, S, N_kv, H)

    offset = jnp.zeros((), jnp.int32)
    cached = decode and self.has_variable("cache", "cached_key")
    if decode:
      cache_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
      cache_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
      index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
      if cached:
        offset = index.value
    if positions is None:
      positions = offset + jnp.arange(steps)
    if self.rotary:
      q = rotary(q, positions, self.rope_base, self.rope_scaling)
      k = rotary(k, positions, self.rope_base, self.rope_scaling)

    if cached:
      # Write this call's keys and values at the cache index; every query then sees the cached
      # keys up to and including its own position.
      zero = jnp.zeros((), jnp.int32)
      start = (zero, offset, zero, zero)
      cache_k.value = jax.lax.dynamic_update_slice(cache_k.value, k, start)
      cache_v.value = jax.lax.dynamic_update_slice(cache_v.value, v, start)
      index.value = offset + steps
      k, v = cache_k.value, cache_v.value
      visible = jnp.arange(k.shape[1])[None, :] <= (offset + jnp.arange(steps))[:, None]
      mask = visible[None, None] if mask is None else jnp.logical_and(mask, visible[None, None])
      causal = False
    if kv_heads != self.num_heads:  # each key/value head serves a group of query heads
      k = jnp.repeat(k, self.num_heads // kv_heads, axis=2)
      v = jnp.repeat(v, self.num_heads // kv_heads, axis=2)
    if mask is not None:
      mask = jnp.broadcast_to(mask, (batch, self.num_heads, steps, k.shape[1]))

    dtype = logits_dtype(self.attention_logits, self.dtype)
    out = dot_product_attention(q, k, v, mask=mask, is_causal=causal, logits_dtype=dtype,
                                kernel=self.attention_kernel)
    if self.is_mutable_collection("intermediates") and not self.is_initializing():
      full_mask = mask
      if causal:  # the fused call applies it through is_causal; explicit weights need the mask
        lower = jnp.tril(jnp.ones((steps, steps), bool))[None, None]
        full_mask = lower if mask is None else jnp.logical_and(mask, lower)
      self.sow("intermediates", "attention_weights", attention_weights(q, k, full_mask, dtype))
    out = dense(width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                use_bias=self.use_bias, **inits, name="out")(out)
    if self.dropout > 0:
      out = nn.Dropout(self.dropout, deterministic=not train)(out)
    return out
