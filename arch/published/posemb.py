"""A ViT's learned position embeddings at another resolution: the (g * g, D) grid of patch
positions resampled to (g' * g', D) by bilinear interpolation with the corners kept, as
big_vision's `models/vit.py` `resample_posemb` does with `scipy.ndimage.zoom(order=1)` (a class
token's row is kept as it is, beside the grid)."""

from __future__ import annotations

import numpy as np


def _weights(old: int, new: int) -> np.ndarray:
  """(new, old) linear-interpolation weights mapping `new` points onto `old` with the first and
  last points kept (`zoom`'s mapping: point i at i * (old - 1) / (new - 1))."""
  w = np.zeros((new, old))
  if new == 1 or old == 1:
    w[:, 0] = 1.0
    return w
  x = np.arange(new) * (old - 1) / (new - 1)
  lo = np.minimum(np.floor(x).astype(int), old - 2)
  frac = x - lo
  w[np.arange(new), lo] = 1 - frac
  w[np.arange(new), lo + 1] += frac
  return w


def resample(grid: np.ndarray, side: int) -> np.ndarray:
  """`grid` (g * g, D), row-major patch positions, as (side * side, D).

  Raises:
    ValueError: `grid` is not a square number of positions.
  """
  g = int(round(grid.shape[0] ** 0.5))
  if g * g != grid.shape[0]:
    raise ValueError(f"position embeddings of {grid.shape[0]} rows are no square grid")
  if g == side:
    return grid
  w = _weights(g, side)
  out = np.einsum("ia,jb,abd->ijd", w, w, grid.reshape(g, g, -1).astype(np.float64))
  return out.reshape(side * side, -1).astype(grid.dtype)
