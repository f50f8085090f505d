"""Converting parameter trees between a Transformer's unrolled blocks (`block0`, `block1`, ...)
and its scanned stack (`blocks/block`, each leaf with a leading axis of the depth):
`model.scan_layers` changes only this layout, so a checkpoint of either initialises the other
(`train.transfer.same_layout`)."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp


def stack_blocks(tree: dict[str, Any], depth: int | None = None) -> dict[str, Any]:
  """An unscanned model's `block0` ... `block{depth-1}` subtrees (params, or a cache) as a
  scanned model's `blocks/block`, each leaf stacked on a new first axis; other entries kept.
  Applied to every dict in the tree, so a whole `params` converts. `depth` defaults to the
  number of `block<i>` entries found."""
  if not isinstance(tree, dict):
    return tree
  if "block0" in tree:
    depth = depth or sum(1 for k in tree if re.fullmatch(r"block\d+", k))
    names = [f"block{i}" for i in range(depth)]
    rest = {k: stack_blocks(v, depth) for k, v in tree.items() if k not in names}
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree[n] for n in names])
    return {**rest, "blocks": {"block": stacked}}
  return {k: stack_blocks(v, depth) for k, v in tree.items()}


def unstack_blocks(tree: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `stack_blocks`: a scanned model's `blocks/block` as `block0` ... ."""
  if not isinstance(tree, dict):
    return tree
  if "blocks" in tree and set(tree["blocks"]) == {"block"}:
    stacked = tree["blocks"]["block"]
    depth = jax.tree.leaves(stacked)[0].shape[0]
    rest = {k: unstack_blocks(v) for k, v in tree.items() if k != "blocks"}
    return {**rest, **{f"block{i}": jax.tree.map(lambda x, i=i: x[i], stacked)
                       for i in range(depth)}}
  return {k: unstack_blocks(v) for k, v in tree.items()}
