"""Train a byte-level BPE vocabulary on a text source's training split, offline, with the
Hugging Face `tokenizers` library (GPT-2's scheme: UTF-8 bytes as the base alphabet, so any text
encodes), and write the `tokenizer.json` that `data.tokenizer="hf:PATH"` reads:

  python -m train.tokenizer --source pydoc_text --vocab_size 512 --out runs/pydoc_bpe512.json

Prints the vocabulary size and the split's tokens per byte.
"""

from __future__ import annotations

import os

from absl import flags

from train import cli
from train import config as config_lib
from train.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("source", "pydoc_text", "a text source (data.source)")
  flags.DEFINE_string("split", "train", "the split to learn the merges from")
  flags.DEFINE_string("data_dir", None, "data.data_dir (default ~/tensorflow_datasets)")
  flags.DEFINE_integer("vocab_size", 512, "the vocabulary's size, the 256 bytes included")
  flags.DEFINE_string("out", None, "the tokenizer.json to write (must not exist)")


def train_bpe(text: bytes, vocab_size: int) -> object:
  """A byte-level BPE `tokenizers.Tokenizer` of `vocab_size` ids learned on `text`."""
  from train.published_files import need
  tokenizers = need("tokenizers", "python -m train.tokenizer")
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([text.decode("utf-8", errors="replace")], trainer)
  return tok

def main(argv: list[str]) -> None:
  del argv
  import data as data_lib
  from data import tokenizer as tokenizer_lib
  if not FLAGS.out:
    raise ConfigError("--out is required: the tokenizer.json to write")
  if os.path.exists(FLAGS.out):
    raise ConfigError(f"--out={FLAGS.out} exists; writing a vocabulary overwrites nothing")
  if FLAGS.vocab_size <= 256:
    raise ConfigError(f"--vocab_size={FLAGS.vocab_size}; expected more than the 256 bytes")
  c = config_lib.base()
  c.data.source = FLAGS.source
  c.data.seq_len = 128  # a text source is read as next-token windows; any length reads it
  if FLAGS.data_dir:
    c.data.data_dir = FLAGS.data_dir
  text = data_lib.load_text(c.data, FLAGS.split).tobytes()
  tok = train_bpe(text, FLAGS.vocab_size)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  tmp = f"{FLAGS.out}.tmp-{os.getpid()}"
  tok.save(tmp)
  os.replace(tmp, FLAGS.out)
  ids = tokenizer_lib.get(f"hf:{FLAGS.out}").encode(text)
  print(f"wrote {FLAGS.out}: {tok.get_vocab_size()} ids; the {FLAGS.source} {FLAGS.split} "
        f"split is {len(text):,} bytes in {len(ids):,} tokens "
        f"({len(ids) / max(len(text), 1):.3f} tokens a byte)")

if __name__ == "__main__":
  define_flags()
  cli.run(main)
