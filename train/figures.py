"""Figure helpers shared by the training loop (sample grids) and the evaluation tools: a headless
pyplot, one example drawn as an image or a signal, and grids of samples (images tiled into one
mosaic, signals drawn as one line collection)."""

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
  else:
    _signal_mosaic(plt, samples.reshape(n, -1), path, columns, rows, title, column_labels,
                   limits)


def _signal_mosaic(plt, samples: np.ndarray, path: str, columns: int, rows: int, title: str,
                   column_labels: list[str] | None, limits: tuple[float, float]) -> None:
  """Signals (N, L) in a grid of cells, each on the shared y-range `limits` with a frame, drawn
  as one line collection (a panel per signal costs a second a grid)."""
  from matplotlib.collections import LineCollection

  n, length = samples.shape
  lo, hi = limits
  span = max(hi - lo, 1e-12)
  gap_x, gap_y = 0.15 * length, 0.3 * span
  pad = 0.1 * span
  lines, frames = [], []
  for i in range(n):
    r, c = divmod(i, columns)
    x0, y0 = c * (length + gap_x), -r * (span + 2 * pad + gap_y)
    lines.append(np.stack([x0 + np.arange(length), y0 + samples[i] - lo + pad], 1))
    top, right = y0 + span + 2 * pad, x0 + length - 0.5
    frames.append(np.array([[x0 - 0.5, y0], [right, y0], [right, top], [x0 - 0.5, top],
                            [x0 - 0.5, y0]]))
  fig, ax = plt.subplots(figsize=(1.2 * columns, 0.8 * rows + 0.4))
  ax.add_collection(LineCollection(frames, colors="0.6", linewidths=0.5))
  ax.add_collection(LineCollection(lines, colors="tab:blue", linewidths=1))
  ax.autoscale()
  ax.set_axis_off()
  for j, label in enumerate(column_labels or []):
    ax.text(j * (length + gap_x) + length / 2, span + 2 * pad, label, ha="center", va="bottom",
            fontsize=8)
  if title:
    ax.set_title(title, fontsize=9, pad=12 if column_labels else 4)
  _save(plt, fig, path)


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
  _save(plt, fig, path)


def _save(plt, fig, path: str) -> None:
  """`fig` laid out and written to `path` (PNG, 100 dpi; folders made), then closed."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
