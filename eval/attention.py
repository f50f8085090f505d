"""Attention maps of a trained Transformer: the weights its attention layers sow, as arrays and
as a PNG figure.

  python -m eval.attention --workdir runs/mnist1d_transformer --index 0 --out attn_mnist1d.png
  python -m eval.attention --workdir runs/charlm_transformer --prompt "for x in range(10):" \\
      --out attn_charlm.png

For a classifier (`transformer.TransformerClassifier`) the figure shows test example `--index`
of the run's eval split, its prediction, and for each layer the attention of the CLS token (or,
with mean pooling, the mean over queries) over the input patches, averaged over heads, plus the
last layer's full token-by-token map. For a language model (`transformer.TransformerLM`) it shows
each layer's (T, T) map over the prompt's characters, averaged over heads; the causal mask makes
it lower-triangular.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import data as data_lib
from eval import restore
from train import cli, figures, generate


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


def _plot_lm(path: str, text: str, maps: list[np.ndarray], title: str) -> None:
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


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  out = FLAGS.out or os.path.join(FLAGS.workdir, "attention.png")
  run = restore.restore(FLAGS.workdir)
  model, config, step = run.model, run.config, run.step
  params, model_state = run.state.params, run.state.model_state
  name = config.model.name
  if name == "transformer.TransformerLM":
    if not FLAGS.prompt:
      raise app.UsageError("--prompt is required for a language model")
    tokens = jnp.asarray(generate.encode(FLAGS.prompt, model.vocab_size))[None]
    if tokens.shape[1] > model.max_len:
      raise ValueError(f"--prompt is {tokens.shape[1]} tokens, longer than the model's "
                       f"max_len={model.max_len}")
    _, maps = attention_maps(model, params, tokens, model_state)
    _plot_lm(out, FLAGS.prompt, [m[0] for m in maps],
             f"{FLAGS.workdir} (step {step}): attention over the prompt, mean over heads")
  else:
    data_config = config.data
    pipe = data_lib.build_pipeline(data_config, data_config.eval_split, train=False,
                                   seed=config.seed)
    if not 0 <= FLAGS.index < pipe.num_examples:
      raise ValueError(f"--index={FLAGS.index} is outside the {pipe.num_examples} examples "
                       f"of split {data_config.eval_split!r}")
    # The example as the model saw it in evaluation (normalised by the run's statistics).
    b, row = divmod(FLAGS.index, pipe.global_batch_size)
    batch = pipe.dataset[b]
    x, label = batch["inputs"][row:row + 1], int(batch["label"][row])
    logits, maps = attention_maps(model, params, jnp.asarray(x, jnp.float32), model_state)
    pred = int(jnp.argmax(logits[0]))
    plot_classifier(out, np.asarray(x[0]).reshape(-1), [m[0] for m in maps],
                     getattr(model, "patch_size", 1), getattr(model, "pool", "") == "cls",
                     f"{data_config.source} {data_config.eval_split} example {FLAGS.index}: "
                     f"label {label}, predicted {pred} ({FLAGS.workdir}, step {step})")
  print(out)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained Transformer's run directory.")
  flags.DEFINE_string("out", None, "PNG path (default WORKDIR/attention.png).")
  flags.DEFINE_integer("index", 0, "Classifier: the eval-split example to show.")
  flags.DEFINE_string("prompt", None, "Language model: the text whose attention to show.")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
