"""Attention weights a Transformer sows (`intermediates/.../attention_weights`), in layer order,
and the figures of them: shared by `python -m eval.attention` and the classifier report
(`eval/report.py`)."""

from __future__ import annotations

from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from train import figures


def attention_maps(model: Any, params: Any, inputs: jnp.ndarray,
                   model_state: dict[str, Any] | None = None) -> tuple[jnp.ndarray, list[np.ndarray]]:
  """(outputs, [per-layer weights (B, N, T, S)]) of `model` on `inputs`, layers in order."""
  outputs, state = model.apply({"params": params, **(model_state or {})}, inputs,
                               mutable=["intermediates"])
  flat = flax.traverse_util.flatten_dict(state["intermediates"])
  layers = sorted((k for k in flat if k[-1] == "attention_weights"),
                  key=lambda k: [int(p[5:]) if p.startswith("block") else 0 for p in k])
  if not layers:
    raise ValueError(f"{type(model).__name__} sows no attention weights; attention maps need a "
                     "Transformer (transformer.TransformerClassifier or TransformerLM)")
  return outputs, [np.asarray(flat[k][0]) for k in layers]


def plot_classifier(path: str, signal: np.ndarray, maps: list[np.ndarray], patch: int,
                    cls: bool, title: str) -> None:
  """A classifier's signal, each layer's attention over its patches (mean over heads) and the
  last layer's full token-by-token map; `maps` are per-layer (N, T, S) weights of one example."""
  plt = figures.pyplot()

  depth = len(maps)
  fig, axes = plt.subplots(depth + 2, 1, figsize=(7, 1.6 * (depth + 2) + 2.5),
                           gridspec_kw={"height_ratios": [1.3] + [1] * depth + [3]})
  t = np.arange(len(signal))
  axes[0].plot(t, signal, color="black", lw=1.2)
  for b in range(0, len(signal) + 1, patch):
    axes[0].axvline(b - 0.5, color="0.85", lw=0.6)
  axes[0].set_title(title, fontsize=9)
  axes[0].set_xlim(-0.5, len(signal) - 0.5)
  axes[0].set_ylabel("signal")
  for i, w in enumerate(maps):
    head_mean = w.mean(axis=0)                                     # (T', T')
    row = head_mean[0, 1:] if cls else head_mean.mean(axis=0)       # over the patches
    axes[i + 1].imshow(np.repeat(row[None], 1, 0), aspect="auto", cmap="viridis",
                       extent=(-0.5, len(signal) - 0.5, 0, 1))
    axes[i + 1].set_yticks([])
    axes[i + 1].set_ylabel(f"layer {i}", fontsize=8)
  axes[1].set_title(("attention of the CLS token" if cls else "mean attention") +
                    " over the patches, mean over heads", fontsize=9)
  last = maps[-1].mean(axis=0)
  im = axes[-1].imshow(last, cmap="viridis")
  labels = (["CLS"] if cls else []) + [str(j) for j in range(last.shape[1] - int(cls))]
  axes[-1].set_xticks(range(len(labels)), labels, fontsize=7)
  axes[-1].set_yticks(range(len(labels)), labels, fontsize=7)
  axes[-1].set_xlabel("key (patch)")
  axes[-1].set_ylabel("query")
  axes[-1].set_title(f"layer {depth - 1}, mean over heads", fontsize=9)
  fig.colorbar(im, ax=axes[-1], fraction=0.04)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_lm(path: str, text: str, maps: list[np.ndarray], title: str) -> None:
  plt = figures.pyplot()

  depth = len(maps)
  fig, axes = plt.subplots(1, depth, figsize=(4.2 * depth, 4.6))
  axes = np.atleast_1d(axes)
  chars = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in text]
  for i, w in enumerate(maps):
    axes[i].imshow(w.mean(axis=0), cmap="viridis", vmin=0, vmax=1)
    axes[i].set_xticks(range(len(chars)), chars, fontsize=6, family="monospace")
    axes[i].set_yticks(range(len(chars)), chars, fontsize=6, family="monospace")
    axes[i].set_title(f"layer {i}", fontsize=9)
    axes[i].set_xlabel("key")
  axes[0].set_ylabel("query")
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
