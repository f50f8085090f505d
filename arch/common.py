"""Small helpers shared by the model files."""

from __future__ import annotations

from typing import Sequence


def check_choice(value: str, options: Sequence[str], field: str) -> None:
  """Raises ValueError naming `model.<field>`, its value and the valid options."""
  if value not in options:
    raise ValueError(f"model.{field}={value!r}; expected one of {list(options)}")


def channels_last(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
  """One example's `shape` with a channel axis: (L,) -> (L, 1) for ndim 1, (H, W) -> (H, W, 1);
  a shape that has one already is returned as is."""
  shape = tuple(shape)
  return shape + (1,) if len(shape) == ndim else shape
