"""Histograms of the trees a train step hands to `train.optim.norms` (gradients, updates,
parameters), every `logging.histograms_every` steps (levanter's `WatchConfig`).

The paradigms' steps already pass those trees to `optim.norms`; while an `optim.watch()` is
open around the tracing of a step, `optim.norms` also hands them to it, so no paradigm returns
anything new. `train.run` then computes, inside the compiled step and only at the steps due (a
`lax.cond` on the state's step), for each array: its count, min, max, sum, sum of squares and
the counts of `BINS` equal bins between its min and max (a float32 vector per array, gathered to
every host like the metrics), and the writers turn them into TensorBoard and W&B histograms.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from train import optim

BINS = 64


def trees_of(watched: dict[str, Any], params: Any) -> dict[str, Any]:
  """What is summarised: the trees `optim.watch()` saw and the step's parameters ("param"; a
  paradigm that hands its parameters to `optim.norms` has the same under that name)."""
  return {**watched, "param": params}


def tags(trees: dict[str, Any]) -> list[str]:
  """The histograms' names, "NAME/PATH" ("grad/Conv_0/kernel"), in `stats`' order."""
  return [f"{name}/{optim.path_name(p)}" for name, tree in sorted(trees.items())
          for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _one(x: jax.Array) -> jax.Array:
  """(5 + BINS,) float32: count, min, max, sum, sum of squares, then the bins' counts."""
  x = x.astype(jnp.float32).ravel()
  lo, hi = jnp.min(x), jnp.max(x)
  width = jnp.where(hi > lo, hi - lo, 1.0)
  index = jnp.clip(jnp.floor((x - lo) / width * BINS), 0, BINS - 1).astype(jnp.int32)
  counts = jnp.zeros((BINS,), jnp.float32).at[index].add(1.0)
  return jnp.concatenate([jnp.stack([jnp.float32(x.size), lo, hi, jnp.sum(x),
                                     jnp.sum(x * x)]), counts])


def stats(trees: dict[str, Any], due: jax.Array) -> jax.Array:
  """(len(tags(trees)), 5 + BINS) float32 of every array in `trees` when `due`, zeros when not
  (computed only then)."""
  leaves = [leaf for _, tree in sorted(trees.items()) for leaf in jax.tree.leaves(tree)]
  shape = (len(leaves), 5 + BINS)
  return jax.lax.cond(due, lambda: jnp.stack([_one(x) for x in leaves]),
                      lambda: jnp.zeros(shape, jnp.float32))


def unpack(row: np.ndarray) -> dict[str, Any]:
  """One row of `stats` as {"num", "min", "max", "sum", "sum_squares", "edges" (BINS + 1,),
  "counts" (BINS,)}."""
  row = np.asarray(row, np.float64)
  num, lo, hi, total, squares = row[:5]
  edges = np.linspace(lo, hi if hi > lo else lo + 1.0, BINS + 1)
  return {"num": num, "min": lo, "max": hi, "sum": total, "sum_squares": squares,
          "edges": edges, "counts": row[5:]}
