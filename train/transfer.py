"""Transfer learning: start a run from the parameters of another trained run.

`init_from.workdir` names the run; every parameter (and batch statistic) of the new model whose
"/"-joined path (`optim.path_name`) exists there with the same shape is copied, unless
`init_from.include` lists regular expressions, in which case only the paths that match one are
copied, and a matching path whose shape differs is an error. The rest (e.g. a new classifier head
for another number of classes) keeps its random initialisation. With `optim.freeze` (regexes of
paths) the copied backbone can be held fixed: a linear probe freezes everything but the head; a
full fine-tune freezes nothing. `init_from.prune` = F zeroes the fraction F of the kernel weights
with the smallest magnitude (globally, `compression.magnitude_masks`) and the supervised optimizer
then leaves exact zeros alone: pruning with fine-tuning.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np

from train import checkpoint, compression, files, optim
from train.errors import ConfigError


def _flat(tree: Any) -> dict[str, Any]:
  return {optim.path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def same_layout(source: Any, target: Any) -> Any:
  """`source` parameters in `target`'s layout of Transformer blocks: a scanned model's stacked
  `blocks/block` unstacked into `block0` ... for an unrolled target, or the reverse
  (`arch.scan.stack_blocks`); unchanged when they agree."""
  from arch import scan

  def scanned(tree: Any) -> bool:
    return any("/blocks/block/" in f"/{k}" for k in _flat(tree))

  def unrolled(tree: Any) -> bool:
    return any(re.search(r"(^|/)block\d+/", k) for k in _flat(tree))

  if scanned(source) and unrolled(target):
    return scan.unstack_blocks(source)
  if unrolled(source) and scanned(target):
    return scan.stack_blocks(source)
  return source


def merge(target: Any, source: Any, include: tuple[str, ...], what: str) -> tuple[Any, list[str]]:
  """`target` with the leaves `source` has at the same path and shape (those matching `include`,
  when given); returns (new tree, copied paths)."""
  src = _flat(source)
  copied: list[str] = []

  def take(path, leaf):
    name = optim.path_name(path)
    wanted = not include or any(re.search(p, name) for p in include)
    if not wanted or name not in src:
      return leaf
    value = np.asarray(src[name])
    if value.shape != tuple(leaf.shape):
      if include:
        raise ConfigError(f"init_from.include takes {what} {name!r}, but its shape there is "
                          f"{value.shape} and this model's is {tuple(leaf.shape)}")
      return leaf
    copied.append(name)
    return value.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(take, target), copied


def initialize_from(state: Any, init_config: Any, shardings: Any) -> tuple[Any, dict[str, Any]]:
  """`state` with parameters and model state copied from `init_config.workdir` (module
  docstring), placed with `shardings` (the state's); and a record of what was copied.

  Raises:
    ConfigError: an `include` pattern that copies nothing, or a shape mismatch it names.
    CheckpointError: the workdir holds no restorable checkpoint.
  """
  include = tuple(init_config.include)
  tree, step = checkpoint.load_state_tree(os.path.join(init_config.workdir, files.CHECKPOINTS))
  params, copied = merge(state.params, same_layout(tree["params"], state.params), include,
                         "parameter")
  if include and not copied:
    raise ConfigError(f"init_from.include={include} copies no parameter from "
                      f"{init_config.workdir}; its parameters are {sorted(_flat(tree['params']))}")
  model_state, copied_state = merge(state.model_state, tree.get("model_state") or {}, include,
                                    "model state")
  pruned = float(init_config.get("prune", 0.0))
  if pruned:
    params = compression.apply_masks(params, compression.magnitude_masks(params, pruned))
  new = state.replace(params=params, model_state=model_state)
  if state.ema_params is not None:
    new = new.replace(ema_params=params)
  new = jax.device_put(new, shardings)
  return new, {"workdir": init_config.workdir, "step": step, "parameters": copied,
               "pruned_fraction_of_kernels": pruned,
               "model_state": copied_state,
               "kept_initialisation": sorted(set(_flat(state.params)) - set(copied))}
