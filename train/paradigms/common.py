"""What the paradigms share: the `Paradigm` tuple the loop drives, the interface check of a model,
the data check of the generative paradigms, the generator inputs of sample grids, the reduction
of eval sums, and the `generative` config section.

Eval steps return sums and a `count`: a metric `x_sum` is reported as `x = x_sum / count`, so
batches and hosts merge exactly (padding has weight 0).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

import data as data_lib
from train.errors import ConfigError, check_positive


class Paradigm(NamedTuple):
  """init(rng, batch) -> state; train_step(state, batch, rng) -> (state, metrics);
  eval_step(state, batch, rng) -> sums and count; predict(state, inputs) -> outputs;
  schedule(update) -> learning rate (for logging).

  Generative paradigms also give `generate(state, z, labels=None, rng=None) -> samples` from
  inputs z of shape (N, *latent_shape) (`rng`: the randomness a stochastic sampler draws after
  z, e.g. ancestral diffusion noise; None is a fixed key; a deterministic generator ignores it),
  and `samples(state) -> (N, ...)`, samples from fixed inputs that the
  loop draws as a grid (`WORKDIR/samples/step_XXXXXXXX.png`) at every evaluation, so the grids
  show progress."""

  init: Callable[..., Any]
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  predict: Callable[..., Any] | None
  schedule: optax.Schedule
  samples: Callable[..., Any] | None = None
  generate: Callable[..., Any] | None = None
  latent_shape: tuple[int, ...] | None = None


def fixed_inputs(shape: tuple[int, ...], num_classes: int, n: int,
                 key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """Generator inputs for sample grids: `n` standard normal draws of `shape` from `key`, and for
  a conditional model (`num_classes` > 0) the labels (n,) i % num_classes, so that a grid
  `num_classes` wide has one class per column."""
  z = jax.random.normal(key, (n,) + tuple(shape))
  labels = jnp.asarray(np.arange(n) % num_classes, jnp.int32) if num_classes else None
  return z, labels


def check_examples(config: Any, model: Any, paradigm: str) -> None:
  """The data checks of the generative paradigms: whole examples (no next-token windows) of the
  model's `data_shape` in both splits, and for a conditional model (`num_classes` > 0) labels in
  [0, num_classes).

  Raises:
    ConfigError: `data.seq_len` > 0.
    DataError: examples of another shape than `model.data_shape`, or a label out of range.
  """
  d = config.data
  if d.seq_len > 0:
    raise ConfigError(f"data.seq_len={d.seq_len} makes next-token windows; paradigm="
                      f"{paradigm!r} trains on whole examples: expected data.seq_len=0")
  for split in (d.train_split, d.eval_split):
    if data_lib.is_streaming(d, split):  # not read whole: the first example's shape, and each
      first = data_lib.open_split(d, split)[0]  # batch's labels are checked as it is read
      shape = tuple(np.shape(first[data_lib.source_info(d).input_key]))
      if shape != tuple(model.data_shape):
        raise data_lib.DataError(
            f"data.source={d.source!r} split {split!r} has examples of shape {shape}; "
            f"model.data_shape={tuple(model.data_shape)}: expected them equal")
      continue
    arrays = data_lib.load_split(d, split)
    shape = tuple(arrays.inputs.shape[1:])
    if shape != tuple(model.data_shape):
      raise data_lib.DataError(
          f"data.source={d.source!r} split {split!r} has examples of shape {shape}; "
          f"model.data_shape={tuple(model.data_shape)}: expected them equal")
    if model.num_classes:
      data_lib.check_labels(arrays.labels, model.num_classes, f"model.num_classes="
                            f"{model.num_classes} with data.source={d.source!r} split {split!r}")


def reduce_eval(sums: dict[str, float]) -> dict[str, float]:
  """{x_sum, ..., count} -> {x: x_sum / count, ..., count}."""
  count = float(sums["count"])
  out = {k[:-4]: float(v) / max(count, 1.0) for k, v in sums.items() if k.endswith("_sum")}
  out["count"] = count
  return out


def require(model: Any, names: dict[str, str], paradigm: str, model_name: str) -> None:
  """Checks that `model` has every attribute or method in `names` ({name: what it is for}), the
  interface `paradigm` calls, whatever the model's class.

  Raises:
    ConfigError: naming the model, the missing names and what each is for.
  """
  missing = [f"{n} ({why})" for n, why in names.items() if not hasattr(model, n)]
  if missing:
    raise ConfigError(f"model.name={model_name!r} ({type(model).__name__}) lacks "
                      f"{', '.join(missing)}, which paradigm={paradigm!r} calls on its model")


def generative_defaults() -> mlc.ConfigDict:
  """The `generative` section of the paradigms that draw samples."""
  g = mlc.ConfigDict()
  g.grid_samples = 100            # in the grids drawn at every evaluation; 0 = no grids
  g.reference = ""                # classifier workdir for eval.generative
  return g


def validate_generative(config: Any) -> None:
  check_positive(config.generative.grid_samples, "generative.grid_samples", allow_zero=True)
