"""Tokenizers of text sources (data/tokenizer.py): bytes as before; a byte-level BPE trained by
`train.tokenizer` (the `tokenizers` library) and a SentencePiece model encode the corpus into
windows of their ids, their ids' byte lengths sum to the text's bytes (so bits per token convert
to bits per byte), and a bad `data.tokenizer` is one line."""

import importlib.util
import io

import numpy as np
import pytest

from data import pipeline, sources
from data import text as data_text
from data import tokenizer as tokenizer_lib
from train import config as config_lib

if not all(importlib.util.find_spec(p) for p in ("tokenizers", "sentencepiece")):
  pytest.skip("the tokenizer libraries are not installed: pip install -e '.[text]'",
              allow_module_level=True)


def _config(data_dir, tokenizer="bytes"):
  c = config_lib.base().data
  c.source, c.data_dir, c.seq_len, c.batch_size, c.tokenizer = ("pydoc_text", data_dir, 16, 4,
                                                                 tokenizer)
  return c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("text"))
  c = _config(path)
  return path, sources.load_text(c, "train").tobytes()


@pytest.fixture(scope="module")
def bpe(corpus, tmp_path_factory):
  from train import tokenizer as train_tokenizer
  path = str(tmp_path_factory.mktemp("bpe") / "bpe.json")
  train_tokenizer.train_bpe(corpus[1][:100_000], 300).save(path)
  return path


def test_bytes_are_the_default_and_unchanged(corpus):
  tok = tokenizer_lib.get("bytes")
  text = corpus[1][:1000]
  np.testing.assert_array_equal(tok.encode(text), np.frombuffer(text, np.uint8))
  assert tok.bytes_of(tok.encode(text)).sum() == 1000


def test_a_trained_bpe_tokenizes_the_windows_and_counts_bytes(corpus, bpe):
  data_dir, text = corpus
  tok = tokenizer_lib.get(f"hf:{bpe}")
  assert tok.vocab_size == 300
  ids = tok.encode(text[:20_000])
  assert len(ids) < 0.8 * 20_000                 # merges: fewer tokens than bytes
  assert tok.bytes_of(ids).sum() == 20_000       # ASCII text: every byte in exactly one token
  c = _config(data_dir, f"hf:{bpe}")
  stream = data_text.token_stream(c, "train")
  np.testing.assert_array_equal(stream, tok.encode(text))
  batch = pipeline.build_pipeline(c, "train", train=True, seed=0).dataset[0]
  assert batch["inputs"].max() < 300 and batch["inputs"].max() > 255  # merged ids in use
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["label"][:, :-1])


def test_sentencepiece(corpus, tmp_path):
  import sentencepiece
  model = io.BytesIO()
  lines = corpus[1][:200_000].decode().splitlines()
  sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                           vocab_size=400, byte_fallback=True,
                                           minloglevel=2)
  path = tmp_path / "sp.model"
  path.write_bytes(model.getvalue())
  tok = tokenizer_lib.get(f"sentencepiece:{path}")
  text = "The with statement is used to wrap the execution of a block."
  ids = tok.encode(text)
  assert 0 < len(ids) < len(text) and ids.max() < 400
  # SentencePiece writes a space before the text (its dummy prefix): one byte more
  assert tok.bytes_of(ids).sum() == len(text) + 1


@pytest.mark.parametrize("spec,message", [
    ("bpe", "data.tokenizer='bpe'; expected 'bytes', 'hf:PATH'"),
    ("hf:/no/such.json", "'/no/such.json' is not a file"),
    ("sentencepiece:README.md", "is not a SentencePiece model"),
])
def test_a_bad_tokenizer_is_one_line(spec, message):
  with pytest.raises(tokenizer_lib.TokenizerError, match=message.replace("(", r"\(")):
    tokenizer_lib.get(spec)


def test_a_converted_folders_own_tokenizer_is_found_and_must_fit_the_model(bpe, tmp_path):
  from train import convert
  from train.errors import ConfigError
  assert convert.folder_tokenizer(str(tmp_path), 1000) is None  # a folder without one
  (tmp_path / "tokenizer.json").write_bytes(open(bpe, "rb").read())
  assert convert.folder_tokenizer(str(tmp_path), 300) == (str(tmp_path / "tokenizer.json"), "hf")
  with pytest.raises(ConfigError, match=r"its tokenizer.json has 300 ids, more than the model's "
                     r"vocabulary of 256"):
    convert.folder_tokenizer(str(tmp_path), 256)
