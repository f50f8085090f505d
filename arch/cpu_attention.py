"""Softmax attention on the CPU as a compiled kernel: `arch/kernels/attention_cpu.cc`, built on
first use with the machine's C++ compiler and called through XLA's FFI (`jax.ffi`).

XLA:CPU computes attention as separate ops, with its small per-head matmuls at about half
PyTorch's speed (docs/speed_kernels.md item 13). The kernel is one custom call for the forward
pass and one for the backward pass, FlashAttention-2's scheme (Dao 2023): each (batch, head)
pair is a task on XLA's intra-op threads, the (T, S) weights never leave the cache, and the
backward pass recomputes them from each query's log-sum-exp. `model.attention_kernel="cpu"`
turns it on (`arch.attention.dot_product_attention`); `python -m benchmarks.attention_speed`
times it.

The kernel is built and registered by `arch.cpu_kernels` (`ensure()`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from arch import cpu_kernels

ensure = cpu_kernels.ensure
KernelUnavailable = cpu_kernels.KernelUnavailable


def _call(name: str, operands: str, results: str, causal: bool):
  """The FFI call `name`, sharded by batch rows and heads (the pairs are independent) and with
  vmap folded into the batch. `operands` and `results`: each array's dimensions, comma separated
  (b batch, t queries, s keys, n heads, h head width)."""
  ins, outs = operands.split(","), results.split(",")

  def call(*args):
    shapes = []
    for dims in outs:
      size = {d: x.shape[dims_in.index(d)] for x, dims_in in zip(args, ins) for d in dims_in}
      shapes.append(jax.ShapeDtypeStruct(tuple(size[d] for d in dims), jnp.float32))
    return jax.ffi.ffi_call(name, tuple(shapes))(*args, causal=np.int64(causal))

  return cpu_kernels.vmapped(cpu_kernels.partitioned(call, operands, results, kept="bn"),
                             batch_led=[True] * len(ins), fold=True)


@functools.cache
def _calls(causal: bool):
  return (_call("strata_attention_forward", "btnh,bsnh,bsnh", "btnh,bnt", causal),
          _call("strata_attention_backward", "btnh,bsnh,bsnh,btnh,bnt,btnh", "btnh,bsnh,bsnh",
                causal))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, causal: bool) -> jnp.ndarray:
  """softmax(QK^T / sqrt(H)) V of float32 q (B, T, N, H) and k, v (B, S, N, H), each query
  attending to the keys at or before its position where `causal` (then S == T): (B, T, N, H).
  Differentiable in q, k and v; sharded by batch and heads under a mesh. Call `ensure()` first
  (outside jit)."""
  return _calls(causal)[0](q, k, v)[0]


def _attention_fwd(q, k, v, causal):
  out, lse = _calls(causal)[0](q, k, v)
  return out, (q, k, v, out, lse)


def _attention_bwd(causal, residuals, g):
  q, k, v, out, lse = residuals
  return _calls(causal)[1](q, k, v, out, lse, g.astype(jnp.float32))


attention.defvjp(_attention_fwd, _attention_bwd)
