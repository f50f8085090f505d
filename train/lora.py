"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): each kernel W
whose path matches `optim.lora.targets` (regular expressions) is used as

    W + (alpha / rank) * (A @ B)     A: (fan_in, rank) ~ N(0, 1 / fan_in), B: (rank, fan_out) = 0

and only A and B train (`optim.make` freezes every other parameter, so they alone have optimizer
state). The adapters live beside the model's parameters under `params["lora"]`, keyed by the
kernel's path with "/" as "|" (a checkpoint holds them; `merged` folds them into the kernels for
export and for the evaluation tools). At the start B is zero, so the model is its base exactly.

A kernel's fan-in is its first axis, except where the input is several axes: an attention output
projection (heads, head width, D) and a convolution (kh, kw, in, out) take all but the last, as
levanter's `lora.py` treats named axes.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from train import optim
from train.errors import ConfigError

KEY = "lora"


def enabled(lora_config: Any) -> bool:
  """Whether `optim.lora` (a ConfigDict or a saved config's dict) asks for adapters."""
  return bool(lora_config) and int(lora_config.get("rank", 0)) > 0


def _fan_in_axes(name: str, ndim: int) -> int:
  return 1 if re.search(r"attn/(query|key|value)/kernel$", name) else ndim - 1


def targets(params: Any, patterns: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the kernels (ndim >= 2) whose path matches one of `patterns`.

  Raises:
    ConfigError: no kernel matches (naming the kernels there are).
  """
  kernels = {optim.path_name(p): tuple(x.shape)
             for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if x.ndim >= 2}
  chosen = {k: s for k, s in kernels.items() if any(re.search(p, k) for p in patterns)}
  if not chosen:
    raise ConfigError(f"optim.lora.targets={tuple(patterns)} match no kernel; the kernels are "
                      f"{sorted(kernels)}")
  return chosen


def init(params: Any, lora_config: Any, rng: jax.Array) -> dict[str, Any]:
  """`params` with zero-effect adapters for the targeted kernels under `params["lora"]`."""
  rank = int(lora_config.rank)
  adapters = {}
  for i, (name, shape) in enumerate(sorted(targets(params, tuple(lora_config.targets)).items())):
    k = _fan_in_axes(name, len(shape))
    fan_in, fan_out = int(np.prod(shape[:k])), int(np.prod(shape[k:]))
    a = jax.random.normal(jax.random.fold_in(rng, i), (fan_in, rank)) / np.sqrt(fan_in)
    adapters[name.replace("/", "|")] = {"a": a, "b": jnp.zeros((rank, fan_out))}
  return {**params, KEY: adapters}


def merged(params: Any, lora_config: Any) -> Any:
  """`params` without `params["lora"]`, each targeted kernel W as W + (alpha / rank) A @ B (in
  W's dtype); `params` itself where it holds no adapters."""
  if not isinstance(params, dict) or KEY not in params:
    return params
  adapters = params[KEY]
  scale = float(lora_config["alpha"]) / int(lora_config["rank"])
  rest = {k: v for k, v in params.items() if k != KEY}

  def fold(path, w):
    name = optim.path_name(path)
    ab = adapters.get(name.replace("/", "|"))
    if ab is None:
      return w
    delta = (ab["a"] @ ab["b"]).reshape(w.shape) * scale
    return w + delta.astype(w.dtype)
  return jax.tree_util.tree_map_with_path(fold, rest)
