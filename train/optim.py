"""The optimizer factory: `config.optim` -> an optax GradientTransformation.

Order of the chain: clip (global norm) -> weight decay -> optimizer moments -> learning-rate
schedule. Weight decay is masked to parameters with ndim >= 2 (kernels, embeddings; not biases
or norm scales). `adamw` decouples it (applied after the moments, Loshchilov & Hutter 2019); for
`sgd`, `momentum`, `nesterov` and `adam` it is L2 added to the gradient, as in PyTorch. Gradient accumulation wraps the whole chain in `optax.MultiSteps`; schedules then count
optimizer updates (`steps / grad_accum_steps`), not micro-steps.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import optax

from arch import common
from train import cpu_optimizer
from train import state as state_lib
from train.errors import ConfigError

_WATCH = threading.local()


@contextlib.contextmanager
def watch() -> Iterator[dict[str, Any]]:
  """{PREFIX + NAME: tree} of the trees `norms` sees while open (the current thread's tracing of
  a step): what `train.histograms` summarises."""
  trees: dict[str, Any] = {}
  outer = getattr(_WATCH, "trees", None)
  _WATCH.trees = trees
  try:
    yield trees
  finally:
    _WATCH.trees = outer


def norms(enabled: bool, prefix: str = "", **trees: Any) -> dict[str, jax.Array]:
  """{PREFIX + NAME + "_norm": the global L2 norm of each tree} (`train.log_norms`), or {}: the
  gradient, update and parameter norms big_vision logs. Not free: XLA fuses the reductions into
  the optimizer's update, and on a TPU those fusions' outputs go through on-chip memory and back
  (ResNet-50's step on v5e:2x2 moves 0.54 GB more a step with them, 0.65% of its time;
  docs/pod_table.md). The trees also go to an open `watch()`."""
  _to_watch(prefix, trees)
  return {f"{prefix}{name}_norm": optax.global_norm(tree) for name, tree in trees.items()
          } if enabled else {}


def _to_watch(prefix: str, trees: dict[str, Any]) -> None:
  """Hands `trees` to the open `watch()`, if any, as {PREFIX + NAME: tree}."""
  watched = getattr(_WATCH, "trees", None)
  if watched is not None:
    watched.update({f"{prefix}{name}": tree for name, tree in trees.items()})


def schedule(optim_config, num_updates: int) -> optax.Schedule:
  """The learning-rate schedule over `num_updates` optimizer updates."""
  o = optim_config
  lr = o.learning_rate
  if o.schedule == "constant":
    return optax.constant_schedule(lr) if o.warmup_steps == 0 else optax.join_schedules(
        [optax.linear_schedule(0.0, lr, o.warmup_steps), optax.constant_schedule(lr)],
        [o.warmup_steps])
  if o.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_updates, 1), alpha=o.end_lr_factor)
  if o.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, o.warmup_steps, max(num_updates, o.warmup_steps + 1), end_value=lr * o.end_lr_factor)
  if o.schedule == "step":
    boundaries = {int(b * num_updates): o.step_factor for b in o.step_boundaries}
    return optax.piecewise_constant_schedule(lr, boundaries)
  raise ValueError(f"optim.schedule={o.schedule!r}")


def decay_mask(params: Any) -> Any:
  """True for parameters that weight decay applies to: ndim >= 2 (not biases, not norm scales)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def path_name(path: tuple[Any, ...]) -> str:
  """A parameter's "/"-joined path, e.g. "Conv_0/kernel" (dict keys, attribute names of an
  optimizer state's named tuples, sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def freeze_labels(params: Any, patterns: tuple[str, ...]) -> Any:
  """"frozen" for each parameter whose path (`path_name`) matches one of the regular
  expressions `patterns` (re.search), "train" for the rest.

  Raises:
    ConfigError: a pattern that matches no parameter (naming the paths there are).
  """
  paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern in patterns:
    if not any(re.search(pattern, name) for name in paths):
      raise ConfigError(f"optim.freeze pattern {pattern!r} matches no parameter; the "
                        f"parameters are {paths}")
  return jax.tree_util.tree_map_with_path(
      lambda p, _: "frozen" if any(re.search(pat, path_name(p)) for pat in patterns)
      else "train", params)


def lora_labels(params: Any) -> Any:
  """"train" for LoRA's adapters (`params["lora"]`, train/lora.py), "frozen" for the rest."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: "train" if path_name(p).startswith("lora/") else "frozen", params)


def make(optim_config, total_steps: int, keep_zeros: bool = False
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule). `total_steps` counts micro-batches (train steps). With
  `keep_zeros`, parameters that are exactly zero are not updated (pruned weights stay pruned)."""
  o = optim_config
  num_updates = max(1, total_steps // o.grad_accum_steps)
  lr = schedule(o, num_updates)
  # The first moment (momentum, Adam's mu) may be kept in bfloat16 to halve its memory, as
  # big_vision does; the second moment stays float32.
  mu_dtype = jnp.bfloat16 if o.get("mu_dtype", "float32") == "bfloat16" else None
  chain = []
  if o.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(o.clip_norm))
  decay = optax.add_decayed_weights(o.weight_decay, mask=decay_mask)
  if o.weight_decay > 0 and o.name != "adamw":
    chain.append(decay)
  if o.name == "sgd":
    pass
  elif o.name in ("momentum", "nesterov"):
    chain.append(optax.trace(decay=o.momentum, nesterov=o.name == "nesterov",
                             accumulator_dtype=mu_dtype))
  elif o.name in ("adam", "adamw"):
    chain.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps, mu_dtype=mu_dtype))
  else:
    raise ValueError(f"optim.name={o.name!r}")
  if o.weight_decay > 0 and o.name == "adamw":
    chain.append(decay)
  chain.append(optax.scale_by_learning_rate(lr))
  tx = optax.chain(*chain)
  if keep_zeros:
    # pruned kernel weights (exactly zero) get zero updates, so they stay pruned while the rest
    # train; biases and norm parameters (which may start at zero) are never pruned
    tx = optax.chain(tx, optax.stateless(
        lambda updates, params: jax.tree.map(
            lambda u, p: jnp.where(p == 0, 0, u) if p.ndim >= 2 else u, updates, params)))
  freeze = tuple(o.get("freeze", ()))
  if int(o.get("lora", {}).get("rank", 0)) > 0:
    # LoRA (train/lora.py): only the adapters under params["lora"] train
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, lora_labels)
  elif freeze:
    # frozen parameters get zero updates (and no optimizer state); the chain above, clipping
    # included, sees only the trainable ones
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               functools.partial(freeze_labels, patterns=freeze))
  if o.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum_steps)
  return tx, lr


def apply(optim_config: Any, tx: optax.GradientTransformation, lr: optax.Schedule, grads: Any,
          opt_state: Any, params: Any, names: Sequence[str] = ("grad", "update", "param"),
          log_norms: bool = False, prefix: str = "", average: Any = None,
          average_weight: jax.Array | None = None) -> tuple[Any, Any, Any, dict[str, jax.Array]]:
  """One optimizer update: (new params, new optimizer state, new average, `norms`). `tx`, `lr`:
  `make(optim_config, ...)`'s. The average (None: none) moves to `average_weight` w times itself
  plus (1 - w) times the new parameters. `names`: the trees of "grad", "update" (the step's
  change) and "param" (the new parameters) handed to `norms` (`log_norms`, `prefix`). Under
  `optim.kernel="cpu"` on a CPU all of it is one compiled call (`train.cpu_optimizer`);
  otherwise optax's `tx.update` and `apply_updates`."""
  if optim_config.get("kernel", "xla") == "cpu" and common.target_platform() == "cpu":
    done = cpu_optimizer.update(optim_config, lr, grads, opt_state, params, decay_mask(params),
                                average, average_weight)
    if getattr(_WATCH, "trees", None) is not None:  # the update tree only for a watch()
      trees = {"grad": grads, "param": done.params,
               "update": jax.tree.map(jnp.subtract, done.params, params)}
      _to_watch(prefix, {n: trees[n] for n in names})
    return done.params, done.opt_state, done.average, {
        f"{prefix}{n}_norm": done.norms[n] for n in names} if log_norms else {}
  updates, opt_state = tx.update(grads, opt_state, params)
  new = optax.apply_updates(params, updates)
  if average is not None:
    average = state_lib.moved_average(average, new, average_weight)
  trees = {"grad": grads, "update": updates, "param": new}
  return new, opt_state, average, norms(log_norms, prefix, **{n: trees[n] for n in names})
