"""Attention variants of `benchmarks.step_variants` (docs/speed_attempts.md, items 8 and 13):
each a context that swaps `arch.attention`'s CPU attention while a step is built. Both compute
strata's attention and its gradients (tests/benchmarks/test_step_variants.py)."""

from __future__ import annotations

import contextlib
import functools

from benchmarks import reductions_as_dots


def head_major() -> contextlib.AbstractContextManager:
  """Attention computed in (B, N, T, H) layout: queries, keys and values transposed once on the
  way in and the output once on the way out, instead of XLA transposing each einsum's operands
  (the causal blocks' too). The same products and sums in the same order as strata's."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from arch import attention

  @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
  def softmax_attention(q, k, v, mask, dtype=None):
    return forward(q, k, v, mask, dtype)[0]

  def forward(q, k, v, mask, dtype):
    dt = jnp.promote_types(q.dtype, jnp.float32) if dtype is None else dtype
    logits = jnp.einsum("bnth,bnsh->bnts", q.astype(dt), k.astype(dt))
    logits = logits / np.asarray(np.sqrt(q.shape[-1]), dt)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(dt).min)
    p = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnts,bnsh->bnth", p, v.astype(p.dtype))
    return out.astype(v.dtype), (q, k, v, mask, p, out)

  def backward(dtype, residuals, g):
    q, k, v, mask, p, out = residuals
    dt = p.dtype
    g = g.astype(dt)
    dp = jnp.einsum("bnth,bnsh->bnts", g, v.astype(dt))
    delta = jnp.einsum("bnth,bnth->bnt", g, out)[..., None]
    ds = p * (dp - delta) / float(np.sqrt(q.shape[-1]))
    mask_grad = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
    return (jnp.einsum("bnts,bnsh->bnth", ds, k.astype(dt)).astype(q.dtype),
            jnp.einsum("bnts,bnth->bnsh", ds, q.astype(dt)).astype(k.dtype),
            jnp.einsum("bnts,bnth->bnsh", p, g).astype(v.dtype), mask_grad)
  softmax_attention.defvjp(forward, backward)

  def dot_product_attention(q, k, v, mask=None, is_causal=False, causal_blocks=4,
                            logits_dtype=None, kernel="xla"):
    del kernel  # a variant of XLA's ops (step_variants.XLA_OPS)
    heads = [jnp.swapaxes(x, 1, 2) for x in (q, k, v)]
    steps, keys = q.shape[1], k.shape[1]
    if mask is not None:
      mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], steps, keys))
    if not is_causal:
      return jnp.swapaxes(softmax_attention(*heads, mask, logits_dtype), 1, 2)
    bounds = sorted({round(i * steps / causal_blocks) for i in range(causal_blocks + 1)})
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
      block = (jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None])[None, None]
      if mask is not None:
        block = jnp.logical_and(block, mask[:, :, lo:hi, :hi])
      qh, kh, vh = heads
      outs.append(softmax_attention(qh[:, :, lo:hi], kh[:, :, :hi], vh[:, :, :hi], block,
                                    logits_dtype))
    return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)
  return reductions_as_dots.patched(attention, "dot_product_attention",
                                   dot_product_attention)


def late_normalised() -> contextlib.AbstractContextManager:
  """Softmax normalised after the product, as flash attention does: E = exp(S - rowmax(S)) times
  [V, 1], so that the row sums l come out of the same batched matmul as E V, and the division is
  on the (T, H) output instead of the (T, S) weights. The backward pass works on E with the
  output's gradient divided by l: dV = E^T (dO / l), dS = E * ((dO / l) V^T - rowsum(dO * O) / l).
  The query is scaled before the product, (T, H) instead of (T, S) multiplications. In the
  inputs' dtype: `model.attention_logits` is not read (the LM's logits are float32 as it is)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from arch import attention

  @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
  def softmax_attention(q, k, v, mask, dtype=None):
    return forward(q, k, v, mask, dtype)[0]

  def forward(q, k, v, mask, dtype):
    h = q.shape[-1]
    qs = q * np.asarray(1 / np.sqrt(h), q.dtype)
    s = jnp.einsum("btnh,bsnh->bnts", qs, k)
    if mask is not None:
      s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
    e = jnp.exp(s - s.max(-1, keepdims=True))
    ones = jnp.ones(v.shape[:-1] + (1,), v.dtype)
    summed = jnp.einsum("bnts,bsnh->btnh", e, jnp.concatenate([v, ones], -1))
    rows = summed[..., h:]                                          # (B, T, N, 1)
    out = summed[..., :h] / rows
    return out, (qs, k, v, mask, e, rows, out)

  def backward(dtype, residuals, g):
    qs, k, v, mask, e, rows, out = residuals
    g = g / rows
    dv = jnp.einsum("bnts,btnh->bsnh", e, g)
    dp = jnp.einsum("btnh,bsnh->bnts", g, v)
    delta = jnp.einsum("btnh,btnh->bnt", g, out)[..., None]
    ds = e * (dp - delta)
    dq = jnp.einsum("bnts,bsnh->btnh", ds, k) * np.asarray(1 / np.sqrt(qs.shape[-1]), qs.dtype)
    dk = jnp.einsum("bnts,btnh->bsnh", ds, qs)
    mask_grad = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
    return dq, dk, dv, mask_grad
  softmax_attention.defvjp(forward, backward)
  return reductions_as_dots.patched(attention, "_softmax_attention", softmax_attention)
