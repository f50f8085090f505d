"""Transfer learning: start a run from the parameters of another trained run, or of a published
checkpoint.

`init_from.workdir` names the run (`init_from.format="strata"`, the default); with
`init_from.format` "torchvision", "timm" or "hf", `init_from.path` names a published file or
Hugging Face folder instead, converted on the way in (`train.published`: its structure read from
the checkpoint; a ViT's heads and image size taken from this run's model). Every parameter (and
batch statistic) of the new model whose "/"-joined path (`optim.path_name`) exists in the source
with the same shape is copied, unless `init_from.include` lists regular expressions, in which
case only the paths that match one are copied, and a matching path whose shape differs is an
error. `init_from.skip` (regexes) keeps paths at their initialisation even where they match (a
new head for the same class count); `init_from.rename` ((regex, replacement) pairs) rewrites the
source's paths first (`("^backbone/", "")`). Every source array left unused (no such path here,
or another shape) is one line of the run's output and a record in `WORKDIR/init_from.json`. The
rest (e.g. a new classifier head for another number of classes) keeps its random
initialisation. With `optim.freeze` (regexes of paths) the copied backbone can be held fixed: a
linear probe freezes everything but the head; a full fine-tune freezes nothing.
`init_from.prune` = F zeroes the fraction F of the kernel weights with the smallest magnitude
(globally, `compression.magnitude_masks`) and the supervised optimizer then leaves exact zeros
alone: pruning with fine-tuning.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np

from train import checkpoint, compression, files, optim
from train import lora as lora_lib
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


def merge(target: Any, source: Any, include: tuple[str, ...], what: str,
          skip: tuple[str, ...] = (), unused: list[str] | None = None) -> tuple[Any, list[str]]:
  """`target` with the leaves `source` (a tree, or a flat {path: array}) has at the same path and
  shape (those matching `include`, when given; none matching `skip`); returns (new tree, copied
  paths), and appends to `unused` a line for each source array not copied for want of a path
  or a shape."""
  src = _flat(source)  # a flat {path: array} flattens to itself
  copied: list[str] = []
  shapes = {optim.path_name(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  if unused is not None:
    for name, value in sorted(src.items()):
      if name not in shapes:
        unused.append(f"{what} {name}: this model has no such path")
      elif tuple(np.shape(value)) != shapes[name]:
        unused.append(f"{what} {name}: shape {tuple(np.shape(value))} there, {shapes[name]} here")

  def take(path, leaf):
    name = optim.path_name(path)
    wanted = not include or any(re.search(p, name) for p in include)
    if not wanted or name not in src or any(re.search(p, name) for p in skip):
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


def _renamed(tree: Any, rename: tuple[tuple[str, str], ...]) -> dict[str, Any]:
  """`tree` as {path: array} with each (regex, replacement) of `rename` applied to every path."""
  out = {}
  for name, value in _flat(tree).items():
    for pattern, replacement in rename:
      name = re.sub(pattern, replacement, name)
    out[name] = value
  return out


def _source(init_config: Any, model_config: Any) -> tuple[dict[str, Any], int, str]:
  """(state tree with params and model_state, its step, what it is) of `init_config`."""
  fmt = init_config.get("format", "strata")
  if fmt == "strata":
    tree, step = checkpoint.load_state_tree(os.path.join(init_config.workdir, files.CHECKPOINTS))
    if lora_lib.KEY in tree["params"]:  # a LoRA run: its adapters folded into its kernels
      lora = checkpoint.read_config(init_config.workdir)["optim"]["lora"]
      tree = {**tree, "params": lora_lib.merged(tree["params"], lora)}
    return tree, step, init_config.workdir
  from train import published, published_files
  path = init_config.path
  model = dict(model_config or {})
  side = 0
  if model.get("patch_size") and model.get("max_len"):  # a ViT: its positions at this run's size
    side = int(round(model["max_len"] ** 0.5)) * int(model["patch_size"])
  converted = published.convert(fmt, published_files.read_state(path, "init_from.path", True),
                                int(model.get("num_heads", 0) or 0), side, f"init_from.path={path}",
                                published_files.read_folder_config(path))
  variables = converted.variables
  return ({"params": variables["params"],
           "model_state": {k: v for k, v in variables.items() if k != "params"}}, 0,
          f"{path} ({fmt})")


def initialize_from(state: Any, init_config: Any, shardings: Any, model_config: Any = None
                    ) -> tuple[Any, dict[str, Any]]:
  """`state` with parameters and model state copied from `init_config`'s run or published
  checkpoint (module docstring), placed with `shardings` (the state's); and a record of what was
  copied and of each source array left unused (`unused`, one line each). `model_config`: this
  run's `config.model`, for what a published checkpoint does not say.

  Raises:
    ConfigError: an `include` pattern that copies nothing, or a shape mismatch it names.
    CheckpointError: the workdir holds no restorable checkpoint.
    ConversionError: a published checkpoint that does not fit its format.
  """
  include = tuple(init_config.include)
  skip = tuple(init_config.get("skip", ()))
  rename = tuple(tuple(pair) for pair in init_config.get("rename", ()))
  tree, step, source = _source(init_config, model_config)
  unused: list[str] = []
  params_source = _renamed(same_layout(tree["params"], state.params), rename)
  params, copied = merge(state.params, params_source, include, "parameter", skip, unused)
  if include and not copied:
    raise ConfigError(f"init_from.include={include} copies no parameter from {source}; its "
                      f"parameters are {sorted(params_source)}")
  model_state, copied_state = merge(state.model_state,
                                    _renamed(tree.get("model_state") or {}, rename), include,
                                    "model state", skip, unused)
  pruned = float(init_config.get("prune", 0.0))
  if pruned:
    params = compression.apply_masks(params, compression.magnitude_masks(params, pruned))
  new = state.replace(params=params, model_state=model_state)
  if state.ema_params is not None:
    new = new.replace(ema_params=params)
  new = jax.device_put(new, shardings)
  return new, {"source": source, "workdir": init_config.workdir, "step": step,
               "parameters": copied, "unused": unused,
               "pruned_fraction_of_kernels": pruned,
               "model_state": copied_state,
               "kept_initialisation": sorted(set(_flat(state.params)) - set(copied))}
