"""Post-training compression of a trained model's parameters, and export as StableHLO.

- `quantize_int8`: symmetric per-output-channel int8 weights. Every weight array with two or
  more dimensions (dense and convolution kernels, whose last axis is the output channel) becomes
  int8 values q and one float32 scale per output channel, s = max|w| / 127 over the other axes,
  q = round(w / s); `dequantize` gives s * q back. Biases, norm scales and other small arrays
  stay float32. Weights shrink about 4x; the model computes with the dequantised float32 weights
  (weight-only quantisation: the saving is in storage and transfer, not in arithmetic). An
  exported int8 model carries the int8 values and dequantises inside its computation.
- `magnitude_masks` / `apply_masks`: global magnitude pruning, the `sparsity` fraction of all
  kernel weights with the smallest |w| set to zero (biases and norms kept).
- `export` / `load_exported`: the inference function f(params, x) serialised with `jax.export`
  (StableHLO) for a fixed input shape and dtype, beside its parameters in their stored dtypes;
  the loaded artefact runs without this codebase's model code.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def _is_kernel(x: Any) -> bool:
  return np.ndim(x) >= 2 and jnp.issubdtype(jnp.result_type(x), jnp.floating)


def quantize_int8(params: Any) -> Any:
  """`params` with each kernel replaced by {"int8": q, "scale": s} (see the module docstring)."""
  def quantize(w):
    if not _is_kernel(w):
      return w
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=tuple(range(w.ndim - 1)), keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return {"int8": q, "scale": scale}
  return jax.tree.map(quantize, params)


def _is_quantized(x: Any) -> bool:
  return isinstance(x, dict) and set(x) == {"int8", "scale"}


def dequantize(qparams: Any) -> Any:
  """float32 parameters from `quantize_int8`'s output (jnp: inside a jitted or exported
  function the int8 values are what is stored, and the scaling is part of the computation)."""
  return jax.tree.map(lambda x: (x["int8"].astype(jnp.float32) * x["scale"]
                                 if _is_quantized(x) else x), qparams, is_leaf=_is_quantized)


def size_bytes(tree: Any) -> int:
  """The bytes of every array leaf of `tree` (as stored: int8 counts 1 byte an element)."""
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


def magnitude_masks(params: Any, sparsity: float) -> Any:
  """Boolean masks of `params`' shape: False for the `sparsity` fraction of kernel weights with
  the smallest magnitude over all kernels together (ties at the threshold pruned too); True
  everywhere else, biases and norm parameters included.

  Raises:
    ValueError: sparsity outside [0, 1).
  """
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"sparsity={sparsity}; expected a fraction in [0, 1)")
  kernels = [np.abs(np.asarray(x)).ravel() for x in jax.tree.leaves(params) if _is_kernel(x)]
  if not kernels or sparsity == 0.0:
    return jax.tree.map(lambda x: np.ones(np.shape(x), bool), params)
  everything = np.concatenate(kernels)
  k = int(np.floor(sparsity * everything.size))
  threshold = np.partition(everything, k - 1)[k - 1] if k else -np.inf
  return jax.tree.map(lambda x: (np.abs(np.asarray(x)) > threshold) if _is_kernel(x)
                      else np.ones(np.shape(x), bool), params)


def apply_masks(params: Any, masks: Any) -> Any:
  """`params` with the masked-out entries set to zero."""
  return jax.tree.map(lambda x, m: jnp.where(m, x, 0).astype(jnp.result_type(x)), params, masks)


def sparsity_of(params: Any) -> float:
  """The fraction of kernel weights that are exactly zero."""
  kernels = [np.asarray(x) for x in jax.tree.leaves(params) if _is_kernel(x)]
  total = sum(x.size for x in kernels)
  return float(sum((x == 0).sum() for x in kernels) / max(total, 1))


def export(fn: Callable[[Any, jnp.ndarray], jnp.ndarray], params: Any, example: Any,
           path: str) -> dict[str, int]:
  """Serialises jit(fn)(params, x), for parameters shaped and typed like `params` and inputs
  like `example`, to `path` (StableHLO, `jax.export`), and the parameters themselves to
  `path`.weights.npz in their own dtypes (int8 stays int8). The program is kept apart from the
  weights because constants closed over by a traced function are folded at trace time: int8
  weights dequantised there would be stored as float32. Returns both files' sizes in bytes."""
  def spec(a):
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
  exported = jax.export.export(jax.jit(fn))(jax.tree.map(spec, params), spec(example))
  with open(path, "wb") as f:
    f.write(exported.serialize())
  with open(path + ".weights.npz", "wb") as f:
    np.savez(f, *[np.asarray(x) for x in jax.tree.leaves(params)])
  return {"program_bytes": os.path.getsize(path),
          "weights_bytes": os.path.getsize(path + ".weights.npz")}


def load_exported(path: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """x -> the exported function of `export` applied to its saved parameters and x (of the
  exported shape); needs neither the model's code nor this module's."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with np.load(path + ".weights.npz") as z:
    leaves = [z[f"arr_{i}"] for i in range(len(z.files))]

  def call(x):
    args, kwargs = jax.tree.unflatten(exported.in_tree, leaves + [x])
    return exported.call(*args, **kwargs)
  return call
