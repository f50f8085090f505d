"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on the device, inside the train step.

Each example is mixed with its neighbour among the rows its device holds (the rows rolled by
one within each of the batch's parts, as big_vision's `update_fn` does under `shard_map`: no
example crosses a device, so mixing costs no communication; on one device, the whole batch
rolled by one), with one ratio per batch drawn from Beta(alpha, alpha). Targets are soft (B, K)
distributions; the loss is the cross-entropy against them. With both on, each batch uses one
of the two with probability 1/2 (timm's default switch).

big_vision takes max(lam, 1 - lam); strata, as timm, takes lam. With the rows in random order the
two give the same distribution of mixed examples: lam < 1/2 mixes example i - 1 into i as
1 - lam mixes i into i - 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from arch import common


def partner(x: jax.Array) -> jax.Array:
  """Each row's mixing partner: `x` (B, ...) rolled by one within each of the batch's
  `arch.common.batch_shards()` parts (the whole batch where that is 1 or does not divide B)."""
  parts = common.batch_shards()
  if parts == 1 or x.shape[0] % parts:
    return jnp.roll(x, 1, axis=0)
  split = common.constrain_batch(x.reshape(parts, x.shape[0] // parts, *x.shape[1:]))
  return common.constrain_batch(jnp.roll(split, 1, axis=1).reshape(x.shape))


def mixup(inputs: jax.Array, targets: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """lam x + (1 - lam) x', the same for the (B, K) targets; x' is `partner(x)`."""
  lam = jnp.asarray(lam, jnp.float32)
  mixed = lam * inputs + (1 - lam) * partner(inputs)
  return mixed.astype(inputs.dtype), lam * targets + (1 - lam) * partner(targets)


def cutmix_box(lam: jax.Array, cy: jax.Array, cx: jax.Array, height: int, width: int
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(top, bottom, left, right) of the pasted box: sides sqrt(1 - lam) x the image's, centred at
  (cy, cx) in pixels and clipped to the image."""
  r = jnp.sqrt(1.0 - lam)
  h, w = jnp.floor(height * r), jnp.floor(width * r)
  top, bottom = jnp.clip(cy - h // 2, 0, height), jnp.clip(cy + h // 2, 0, height)
  left, right = jnp.clip(cx - w // 2, 0, width), jnp.clip(cx + w // 2, 0, width)
  return top, bottom, left, right


def cutmix(inputs: jax.Array, targets: jax.Array, lam: jax.Array, cy: jax.Array,
           cx: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Images (B, H, W, C) with the box of `cutmix_box` taken from `partner(inputs)`; the
  targets mix by the area actually pasted."""
  if inputs.ndim != 4:
    raise ValueError(f"supervised.cutmix needs images (B, H, W, C); got inputs of shape "
                     f"{inputs.shape}")
  _, height, width, _ = inputs.shape
  top, bottom, left, right = cutmix_box(lam, cy, cx, height, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  mixed = jnp.where(box[None, :, :, None], partner(inputs), inputs)
  kept = 1.0 - (bottom - top) * (right - left) / (height * width)
  return mixed, kept * targets + (1 - kept) * partner(targets)


def mix(rng: jax.Array, inputs: jax.Array, targets: jax.Array, mixup_alpha: float,
        cutmix_alpha: float) -> tuple[jax.Array, jax.Array]:
  """Mixup, CutMix or (both > 0) one of them at random for this batch; unchanged when both are
  0."""
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return inputs, targets
  r_lam, r_cut, r_pos = jax.random.split(rng, 3)
  out = []
  if mixup_alpha > 0:
    out.append(mixup(inputs, targets, jax.random.beta(r_lam, mixup_alpha, mixup_alpha)))
  if cutmix_alpha > 0:
    lam = jax.random.beta(jax.random.fold_in(r_lam, 1), cutmix_alpha, cutmix_alpha)
    cy = jax.random.randint(r_pos, (), 0, inputs.shape[1])
    cx = jax.random.randint(jax.random.fold_in(r_pos, 1), (), 0, inputs.shape[2])
    out.append(cutmix(inputs, targets, lam, cy, cx))
  if len(out) == 1:
    return out[0]
  pick = jax.random.bernoulli(r_cut)
  return jax.tree.map(lambda a, b: jnp.where(pick, b, a), out[0], out[1])
