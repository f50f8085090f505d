"""Figure helpers shared by the training loop (sample grids) and the evaluation tools: a headless pyplot, one example drawn as an
image or a signal, and grids of samples."""

from __future__ import annotations

import os

import numpy as np


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def show(ax, example: np.ndarray, limits: tuple[float, float]) -> None:
  """An image (H, W[, 1]) on a grey scale fixed to `limits` (so a reconstruction is drawn on its
  input's scale), or a signal (L,) on a y-axis fixed to them."""
  example = np.asarray(example)
  if example.ndim == 3 and example.shape[-1] == 1:
    example = example[..., 0]
  if example.ndim == 2:
    ax.imshow(example, cmap="gray_r", vmin=limits[0], vmax=limits[1])
  else:
    ax.plot(example.reshape(-1), lw=1)
    pad = 0.1 * (limits[1] - limits[0])
    ax.set_ylim(limits[0] - pad, limits[1] + pad)
  ax.set_xticks([])
  ax.set_yticks([])


def sample_grid(samples: np.ndarray, path: str, columns: int = 10, title: str = "",
                column_labels: list[str] | None = None,
                limits: tuple[float, float] | None = None) -> None:
  """Samples (N, ...) as a grid `columns` wide, on one shared scale (`limits`, default the
  samples' own range), written to `path` (PNG)."""
  plt = pyplot()
  samples = np.asarray(samples, np.float32)
  n = len(samples)
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  limits = limits or (float(samples.min()), float(samples.max()))
  size = 0.8 if samples[0].ndim >= 2 else 1.2  # images square, signals wider
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns, 0.8 * rows + 0.4),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i < n:
      show(ax, samples[i], limits)
    else:
      ax.axis("off")
  for j, label in enumerate(column_labels or []):
    axes[0, j].set_title(label, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
