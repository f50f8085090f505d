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

import jax.numpy as jnp
import numpy as np
from absl import app, flags

import data as data_lib
from eval import restore
from eval.attention_maps import attention_maps, plot_classifier, plot_lm
from train import cli, generate, remote_workdir, workdir_lock

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    out = FLAGS.out or os.path.join(workdir, "attention.png")
    with workdir_lock.writing_into(workdir, out):
      draw(workdir, out)
  print(os.path.join(FLAGS.workdir, "attention.png") if not FLAGS.out else out)


def draw(workdir: str, out: str) -> None:
  """The figure of the run in `workdir` and the flags' input, to `out`."""
  run = restore.restore(workdir)
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
    plot_lm(out, FLAGS.prompt, [m[0] for m in maps],
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
