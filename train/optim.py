"""The optimizer factory: `config.optim` -> an optax GradientTransformation.

Order of the chain: clip (global norm) -> weight decay -> optimizer moments -> learning-rate
schedule. Weight decay is masked to parameters with ndim >= 2 (kernels, embeddings; not biases
or norm scales). `adamw` decouples it (applied after the moments, Loshchilov & Hutter 2019); for
`sgd`, `momentum`, `nesterov` and `adam` it is L2 added to the gradient, as in PyTorch. Gradient accumulation wraps the whole chain in `optax.MultiSteps`; schedules then count
optimizer updates (`steps / grad_accum_steps`), not micro-steps.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


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


def make(optim_config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule). `total_steps` counts micro-batches (train steps)."""
  o = optim_config
  num_updates = max(1, total_steps // o.grad_accum_steps)
  lr = schedule(o, num_updates)
  chain = []
  if o.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(o.clip_norm))
  decay = optax.add_decayed_weights(o.weight_decay, mask=decay_mask)
  if o.weight_decay > 0 and o.name != "adamw":
    chain.append(decay)
  if o.name == "sgd":
    pass
  elif o.name in ("momentum", "nesterov"):
    chain.append(optax.trace(decay=o.momentum, nesterov=o.name == "nesterov"))
  elif o.name in ("adam", "adamw"):
    chain.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
  else:
    raise ValueError(f"optim.name={o.name!r}")
  if o.weight_decay > 0 and o.name == "adamw":
    chain.append(decay)
  chain.append(optax.scale_by_learning_rate(lr))
  tx = optax.chain(*chain)
  if o.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum_steps)
  return tx, lr
