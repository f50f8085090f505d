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
  if samples[0].ndim >= 2:
    _image_mosaic(plt, samples, path, columns, rows, title, column_labels, limits)
    return
  size = 1.2  # signals: a panel each, wider than tall
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


def _image_mosaic(plt, samples: np.ndarray, path: str, columns: int, rows: int, title: str,
                  column_labels: list[str] | None, limits: tuple[float, float]) -> None:
  """Images (N, H, W[, C]) tiled into one array, one pixel apart, drawn with one `imshow`: a
  hundred panels cost a hundred axes otherwise (about a second a grid)."""
  if samples.ndim == 4 and samples.shape[-1] == 1:
    samples = samples[..., 0]
  n, h, w = samples.shape[:3]
  lo, hi = limits
  channels = samples.shape[3:]
  if channels:  # colour: scaled to [0, 1] on the shared limits; gaps white
    samples = np.clip((samples - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    background = 1.0
  else:  # grey on gray_r: the gaps at the low end (white)
    background = lo
  mosaic = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, *channels), background,
                   np.float32)
  for i in range(n):
    r, c = divmod(i, columns)
    mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = samples[i]
  fig, ax = plt.subplots(figsize=(0.8 * columns, 0.8 * rows + 0.4))
  if channels:
    ax.imshow(mosaic, interpolation="nearest")
  else:
    ax.imshow(mosaic, cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
  ax.set_yticks([])
  if column_labels:
    ax.xaxis.tick_top()
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(len(column_labels))],
                  column_labels, fontsize=8)
    ax.tick_params(length=0)
  else:
    ax.set_xticks([])
  for side in ax.spines.values():
    side.set_visible(False)
  if title:
    ax.set_title(title, fontsize=9, pad=14 if column_labels else 4)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
