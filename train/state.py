"""The train state: one pytree, checkpointed whole. Functions (apply, optimizer) are bound in the
paradigm's step factory, never stored here, so the state is plain arrays."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step: int32 count of train steps taken; params: the trainable parameters; opt_state: the
  optimizer's; model_state: other variable collections (e.g. `batch_stats`); ema_params: an
  exponential moving average of `params`, or None."""

  step: jnp.ndarray
  params: Any
  opt_state: Any
  model_state: Any
  ema_params: Any = None


def create(params: Any, opt_state: Any, model_state: Any | None = None,
           ema_params: Any = None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    model_state=dict(model_state or {}), ema_params=ema_params)


def update_average(average: Any, params: Any, decay: float, step: jnp.ndarray) -> Any:
  """An exponential moving average of `params` after update `step` (None stays None), with
  weight min(decay, (1 + step) / (10 + step)) on the old average, so it forgets its random start
  in the first steps (TensorFlow's `ExponentialMovingAverage` with `num_updates`)."""
  if average is None:
    return None
  return moved_average(average, params, average_weight(decay, step))


def moved_average(average: Any, params: Any, weight: jnp.ndarray) -> Any:
  """weight * average + (1 - weight) * params, array by array."""
  return jax.tree.map(lambda a, p: weight * a + (1.0 - weight) * p, average, params)


def average_weight(decay: float, step: jnp.ndarray) -> jnp.ndarray:
  """The old average's weight after update `step`: min(decay, (1 + step) / (10 + step))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def compute_dtype(config: Any) -> Any:
  """bfloat16 under `train.precision="bfloat16"` (mixed precision), else None (float32)."""
  return jnp.bfloat16 if config.train.get("precision") == "bfloat16" else None


def in_compute_dtype(model: Any, compute: Any) -> Any:
  """`model` with its layers computing in `compute` (a clone with `dtype=compute`; parameters
  stay in their `param_dtype`); unchanged when `compute` is None or the model has no `dtype`.
  Casting the parameters and inputs down (`mixed`) is not enough alone: a flax layer given
  `dtype=float32`, as strata's models are by default, promotes them back to float32 and
  computes there, so the step would round to bfloat16 and still compute in float32."""
  if compute is None or not hasattr(model, "dtype") or model.dtype == compute:
    return model
  return model.clone(dtype=compute)


def mixed(apply: Any, compute: Any) -> Any:
  """`apply(params, *args, **kw)` run in `compute` precision: floating parameters
  (`cast_params`) and inputs cast down, floating outputs cast back to float32, so losses (and
  the gradients' accumulation into the float32 parameters) stay in float32. `compute=None`
  returns `apply` unchanged."""
  if compute is None:
    return apply

  def run(params, *args, **kwargs):
    out = apply(cast_params(params, compute), *cast_floating(args, compute), **kwargs)
    return cast_floating(out, jnp.float32)
  return run


def cast_params(params: Any, dtype: Any) -> Any:
  """The compute copy of float32 parameters under mixed precision: kernels and tables (ndim >=
  2) cast to `dtype`; biases, normalisation scales and other vectors left in float32, since
  every layer that uses them casts them where it computes (flax's `promote_dtype` under the
  layer's `dtype`). Left whole, their gradients' reductions over the batch accumulate and leave
  in float32 and fuse with the convolutions that feed them; cast, XLA on TPU ran each
  BatchNorm's parameter-gradient sums as separate bfloat16 passes over the activations: a
  ResNet-50 step on v5e:2x2 moved 90.2 GB a chip against 83.7 GB left whole (flax's own step:
  82.6 GB; docs/pod_table.md)."""
  def cast(x):
    floating = jnp.issubdtype(jnp.result_type(x), jnp.floating)
    return x.astype(dtype) if floating and jnp.ndim(x) >= 2 else x
  return jax.tree.map(cast, params)


def cast_floating(tree: Any, dtype: Any) -> Any:
  """`tree` with its floating-point leaves cast to `dtype` (integers and keys untouched): the
  compute copy of float32 parameters under mixed precision; gradients flow back through the
  cast to the float32 originals."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
  return jax.tree.map(cast, tree)
