"""Held-out bits per token of trained language models, beside a count-based bigram baseline.

  python -m eval.lm --workdir runs/charlm_transformer --workdir runs/charlm_lstm --split test

prints, for each workdir, the bits per token (bits per character for byte-level text) and per
byte (comparable across `data.tokenizer`s: bits per token x target tokens / their UTF-8 bytes)
of its newest checkpoint on `--split`, with every next-token target of the split scored once (the
windows of `data.pipeline.TextEvalBatches`), and, first, a bigram model fitted on the same
train split: P(b | a) = (C(a, b) + alpha) / (C(a) + alpha V), alpha chosen on the validation split
(over the first run's tokens; left out past a vocabulary of 4,096).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections as mlc
import numpy as np
from absl import flags

from data import text as data_text
from data import tokenizer as data_tokenizer
from eval import restore
from train import checkpoint, cli, evaluators, remote_workdir

ALPHAS = tuple(float(a) for a in np.logspace(-4, 1, 26))


def bigram_counts(stream: np.ndarray, vocab: int) -> np.ndarray:
  """(V, V) counts C[a, b] of byte b following byte a in `stream` (N,) int."""
  counts = np.zeros((vocab, vocab), np.float64)
  np.add.at(counts, (stream[:-1].astype(np.int64), stream[1:].astype(np.int64)), 1.0)
  return counts


def bigram_bits(counts: np.ndarray, held_out: np.ndarray, alpha: float) -> float:
  """Mean -log2 P(held_out[t] | held_out[t-1]) over t = 1..N-1 under add-`alpha` smoothing."""
  vocab = counts.shape[0]
  probs = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * vocab)
  prev, nxt = held_out[:-1].astype(np.int64), held_out[1:].astype(np.int64)
  return float(-np.mean(np.log2(probs[prev, nxt])))


def fit_bigram(train: np.ndarray, valid: np.ndarray, vocab: int) -> tuple[np.ndarray, float]:
  """Counts on `train` and the smoothing alpha (from `ALPHAS`) best on `valid`."""
  counts = bigram_counts(train, vocab)
  alpha = min(ALPHAS, key=lambda a: bigram_bits(counts, valid, a))
  return counts, alpha


def workdir_metrics(workdir: str, split: str) -> tuple[dict[str, float], int, int]:
  """(eval metrics on `split`, checkpoint step, parameter count) of a trained workdir: the
  "paradigm" evaluator (`train/paradigm_eval.py`), what training records for its splits."""
  run = restore.restore(workdir)
  metrics = evaluators.build("lm", mlc.ConfigDict({"split": split}), run)(run.state)
  return metrics, run.step, sum(x.size for x in jax.tree.leaves(run.state.params))


FLAGS = flags.FLAGS


def bytes_per_target(data_config: Any, split: str) -> tuple[int, int]:
  """(target tokens, their UTF-8 bytes) of `split` under the run's `data.tokenizer`: every token
  but the first is a target once, so bits per byte = bits per token x tokens / bytes."""
  stream = data_text.token_stream(data_config, split)
  tok = data_tokenizer.get(data_config.get("tokenizer", "bytes"))
  return len(stream) - 1, int(tok.bytes_of(stream[1:]).sum())


BIGRAM_VOCAB_LIMIT = 4096  # the (V, V) table: 128 MB of float64 at this size


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdirs(FLAGS.workdir) as local:  # gs://: local copies
    print_table(dict(zip(FLAGS.workdir, local)))


def print_table(workdirs: dict[str, str]) -> None:
  """The bits-per-token table of the runs {name: local workdir}, after the bigram baseline."""
  rows: list[tuple[str, Any, Any, float, float]] = []
  first = checkpoint.read_config(next(iter(workdirs.values())))
  data_config = mlc.ConfigDict(first["data"])
  if data_config.seq_len <= 0:
    raise ValueError(f"--workdir={next(iter(workdirs))} is not a language model run "
                     f"(data.seq_len={data_config.seq_len})")
  train = data_text.token_stream(data_config, data_config.train_split)
  valid = data_text.token_stream(data_config, "validation")
  held = data_text.token_stream(data_config, FLAGS.split)
  vocab = int(first["model"].get("vocab_size") or max(train.max(), valid.max(), held.max()) + 1)
  tokens, nbytes = bytes_per_target(data_config, FLAGS.split)
  if vocab <= BIGRAM_VOCAB_LIMIT:
    counts, alpha = fit_bigram(train, valid, vocab)
    bits = bigram_bits(counts, held, alpha)
    rows.append((f"bigram, add-{alpha:.3g} (fitted on {data_config.train_split})", "-",
                 vocab * vocab, bits, bits * tokens / nbytes))
  for name, w in workdirs.items():
    metrics, step, params = workdir_metrics(w, FLAGS.split)
    tokens, nbytes = bytes_per_target(mlc.ConfigDict(checkpoint.read_config(w)["data"]),
                                      FLAGS.split)
    bits = metrics["bits_per_token"]
    rows.append((name, step, params, bits, bits * tokens / nbytes))
  print(f"| model | step | parameters | {FLAGS.split} bits per token | bits per byte |")
  print("|---|---|---|---|---|")
  for name, step, params, bits, per_byte in rows:
    print(f"| {name} | {step} | {params:,} | {bits:.4f} | {per_byte:.4f} |"
          if math.isfinite(bits) else f"| {name} | {step} | {params} | {bits} | {per_byte} |")


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_multi_string("workdir", None, "Trained language models' run directories.")
  flags.DEFINE_string("split", "test", "The held-out split to score.")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
