# Copyright 2024 Big Vision Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""big_vision's update step for configs/vit_s16_i1k.py, as one function to compile.

Vendored from google-research/big_vision at 0127fb6b337ee2a27bf4e54dea79cff176527356:
`update_fn` of big_vision/train.py (lines 275-315), `softmax_xent`, `get_mixup` and
`create_learning_rate_schedule` of big_vision/utils.py, and the chain `make` of
big_vision/optax.py builds for that config (clip by global norm 1, scale_by_adam with a bfloat16
first moment, the learning rate 1e-3, decoupled weight decay 1e-4 on kernels, the warm-up and
cosine schedule, -1). What the port changed, each marked "strata port":

- `make` is written out for this one config: its generic masks (frozen parameters, per-pattern
  schedules and learning-rate multipliers) are all-true or absent there.
- The step count comes from the adam state (`bv_optax.get_count` reads the same counter).
- `jax.shard_map` instead of `jax.experimental.shard_map.shard_map` (moved in jax 0.10), over
  the mesh given instead of the process's devices.
"""

import re

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

# configs/vit_s16_i1k.py
CONFIG = dict(lr=0.001, wd=0.0001, grad_clip_norm=1.0, mu_dtype="bfloat16",
              warmup_steps=10_000, mixup_p=0.2,
              model=dict(variant="S/16", rep_size=True, pool_type="gap", posemb="sincos2d"))


def softmax_xent(*, logits, labels, reduction=True, kl=False, axis=-1):
  log_p = jax.nn.log_softmax(logits, axis=axis)
  nll = -jnp.sum(labels * log_p, axis=axis)
  if kl:
    nll += jnp.sum(labels * jnp.log(jnp.clip(labels, 1e-8)), axis=axis)
  return jnp.mean(nll) if reduction else nll


def get_mixup(rng, p):
  """Perform mixup https://arxiv.org/abs/1710.09412."""
  rng, rng_mixup = jax.random.split(rng)
  a = jax.random.beta(rng_mixup, p, p)
  a = jnp.maximum(a, 1.0 - a)  # see (internal link) for the context.
  def _mixup(*things, **more_things):
    mix = lambda thing: a * thing + (1 - a) * jnp.roll(thing, shift=1, axis=0)
    return rng, *jax.tree.map(mix, (things, more_things))
  return _mixup


def create_learning_rate_schedule(total_steps, base, warmup_steps):
  """utils.create_learning_rate_schedule with decay_type='cosine' and no cooldown."""
  def step_fn(step):
    lr = base
    progress = (step - warmup_steps) / float(total_steps - warmup_steps)
    progress = jnp.clip(progress, 0.0, 1.0)
    lr = lr * 0.5 * (1. + jnp.cos(jnp.pi * progress))
    if warmup_steps:
      lr = lr * jnp.minimum(1., step / warmup_steps)
    return jnp.asarray(lr, dtype=jnp.float32)
  return step_fn


def make_tx(params, total_steps, config=CONFIG):
  """optax.make's chain for vit_s16_i1k (strata port: written out, see the docstring)."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  kernels = flax.traverse_util.unflatten_dict(
      {tuple(k.split("/")): bool(re.search(".*/kernel$", k)) for k in flat})
  schedule = create_learning_rate_schedule(total_steps, 1.0, config["warmup_steps"])
  return optax.chain(
      optax.clip_by_global_norm(config["grad_clip_norm"]),
      optax.scale_by_adam(mu_dtype=config["mu_dtype"]),
      optax.scale(config["lr"]),
      optax.add_decayed_weights(config["wd"], kernels),
      optax.scale_by_schedule(schedule),
      optax.scale(-1.0))


def make_update_fn(model, tx, mesh, config=CONFIG):
  """update_fn of big_vision/train.py for `model` and `tx`, its batch sharded over `mesh`'s
  "data" axis."""

  def update_fn(train_state, rng, batch):
    """Update step."""

    images, labels = batch["image"], batch["labels"]

    step_count = train_state["opt"][1].count  # strata port: scale_by_adam's counter
    rng = jax.random.fold_in(rng, step_count)

    if config["mixup_p"]:
      # The shard_map below makes mixup run on every device independently and
      # thus avoids unnecessary communication.
      sharded_mixup_fn = jax.shard_map(
          get_mixup(rng, config["mixup_p"]),
          mesh=mesh,
          in_specs=P("data"), out_specs=(P(), P("data"), P("data")))
      rng, (images, labels), _ = sharded_mixup_fn(images, labels)

    # Get device-specific loss rng.
    rng, rng_model = jax.random.split(rng, 2)

    def loss_fn(params):
      logits, _ = model.apply(
          {"params": params}, images,
          train=True, rngs={"dropout": rng_model})
      return softmax_xent(logits=logits, labels=labels)

    params, opt = train_state["params"], train_state["opt"]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)

    measurements = {"training_loss": loss}
    gs = jax.tree.leaves(grads)
    measurements["l2_grads"] = jnp.sqrt(sum([jnp.sum(g * g) for g in gs]))
    ps = jax.tree.leaves(params)
    measurements["l2_params"] = jnp.sqrt(sum([jnp.sum(p * p) for p in ps]))
    us = jax.tree.leaves(updates)
    measurements["l2_updates"] = jnp.sqrt(sum([jnp.sum(u * u) for u in us]))

    return {"params": params, "opt": opt}, measurements

  return update_fn
