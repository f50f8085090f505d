"""The train state: one pytree, checkpointed whole. Functions (apply, optimizer) are bound in the
paradigm's step factory, never stored here, so the state is plain arrays."""

from __future__ import annotations

from typing import Any

import flax.struct
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
