"""Small helpers shared by the model files."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn


def check_choice(value: str, options: Sequence[str], field: str) -> None:
  """Raises ValueError naming `model.<field>`, its value and the valid options."""
  if value not in options:
    raise ValueError(f"model.{field}={value!r}; expected one of {list(options)}")


def channels_last(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
  """One example's `shape` with a channel axis: (L,) -> (L, 1) for ndim 1, (H, W) -> (H, W, 1);
  a shape that has one already is returned as is."""
  shape = tuple(shape)
  return shape + (1,) if len(shape) == ndim else shape


def maybe_remat(block: type[nn.Module], remat: bool, static_argnums: tuple[int, ...] = ()):
  """`nn.remat(block)` when `remat` (the model's `remat` field), else `block` unchanged.

  Rematerialisation (`jax.checkpoint`) keeps only each block's inputs for the backward pass and
  recomputes its activations there: activation memory falls from one set per block to about one
  block's, for roughly one more forward pass of compute. Parameter names and values are the same
  either way, so a checkpoint trained with one setting restores into the other.
  `static_argnums` are the positions (self = 0) of Python-valued arguments such as `train`.
  """
  return nn.remat(block, static_argnums=static_argnums) if remat else block
