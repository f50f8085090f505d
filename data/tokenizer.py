"""Tokenizers of text sources (`data.tokenizer`):

- "bytes" (the default): token id = byte value, 256 ids, no vocabulary file;
- "hf:PATH": a Hugging Face `tokenizer.json` (the `tokenizers` library: byte-level BPE as GPT-2
  and Llama 3 use, or any other it reads), e.g. one `python -m train.tokenizer` trained;
- "sentencepiece:PATH": a SentencePiece `.model` (Llama 2, T5, Gemma).

Text is encoded without special tokens, document by document; a stream is the concatenation of
its documents' ids. `bytes_of` gives each id's length in UTF-8 bytes, so that a model's bits per
token convert to bits per byte, comparable across tokenizers (`eval.lm`). Without the library a
kind needs, one line says how to install it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import numpy as np

INSTALL = "pip install -e '.[text]'"


class TokenizerError(ValueError):
  """A `data.tokenizer` that cannot be used: one line naming it."""
  exit_status = 2


class Tokenizer:
  """`encode(text) -> (N,) ids` (int32; uint8 for bytes), `vocab_size`, `bytes_of(ids) -> (N,)
  int64` and `fingerprint` (what lineage and caches record)."""

  spec = "bytes"
  vocab_size = 256

  def encode(self, text: Any) -> np.ndarray:
    """The text's UTF-8 bytes as ids (uint8: a byte stream's own dtype)."""
    if isinstance(text, str):
      text = text.encode("utf-8")
    return np.frombuffer(bytes(text), np.uint8)

  def bytes_of(self, ids: np.ndarray) -> np.ndarray:
    return np.ones(len(ids), np.int64)

  @property
  def fingerprint(self) -> str:
    return "bytes"


def _str(text: Any) -> str:
  """A record's text as str (bytes decoded as UTF-8), what the libraries encode."""
  if isinstance(text, (bytes, bytearray, memoryview)):
    return bytes(text).decode("utf-8", errors="replace")
  return text


class _Library(Tokenizer):
  """A tokenizer file read by its library; ids' byte lengths from decoding each id alone."""

  def __init__(self, spec: str, path: str):
    if not os.path.isfile(path):
      raise TokenizerError(f"data.tokenizer={spec!r}: {path!r} is not a file")
    self.spec, self.path = spec, path
    with open(path, "rb") as f:
      self._digest = hashlib.sha256(f.read()).hexdigest()[:16]

  @property
  def fingerprint(self) -> str:
    return f"{self.spec.split(':', 1)[0]}:{self._digest}"

  @functools.cached_property
  def _lengths(self) -> np.ndarray:
    return np.array([len(self._piece(i)) for i in range(self.vocab_size)], np.int64)

  def bytes_of(self, ids: np.ndarray) -> np.ndarray:
    return self._lengths[np.asarray(ids)]


class HuggingFace(_Library):
  def __init__(self, spec: str, path: str):
    super().__init__(spec, path)
    try:
      import tokenizers
    except ImportError as e:
      raise ImportError(f"data.tokenizer={spec!r} needs the tokenizers package: {INSTALL}") from e
    try:
      self._tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the library's own errors for a file that is not a tokenizer
      raise TokenizerError(f"data.tokenizer={spec!r}: {path!r} is not a tokenizer.json "
                           f"({str(e).splitlines()[0][:120]})") from e
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: Any) -> np.ndarray:
    return np.asarray(self._tok.encode(_str(text), add_special_tokens=False).ids, np.int32)

  def _piece(self, i: int) -> bytes:
    return self._tok.decode([i], skip_special_tokens=False).encode("utf-8")


class SentencePiece(_Library):
  def __init__(self, spec: str, path: str):
    super().__init__(spec, path)
    try:
      import sentencepiece
    except ImportError as e:
      raise ImportError(f"data.tokenizer={spec!r} needs the sentencepiece package: "
                        f"{INSTALL}") from e
    try:
      self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
    except Exception as e:
      raise TokenizerError(f"data.tokenizer={spec!r}: {path!r} is not a SentencePiece model "
                           f"({str(e).splitlines()[0][:120]})") from e
    self.vocab_size = self._sp.get_piece_size()

  def encode(self, text: Any) -> np.ndarray:
    return np.asarray(self._sp.encode(_str(text)), np.int32)

  def _piece(self, i: int) -> bytes:
    piece = self._sp.id_to_piece(i)
    if self._sp.is_byte(i):
      return b"x"  # <0xNN>: one byte
    if self._sp.is_control(i) or self._sp.is_unknown(i):
      return b""
    return piece.replace("\u2581", " ").encode("utf-8")


BYTES = Tokenizer()  # the default: token id = byte value


@functools.lru_cache(maxsize=8)
def get(spec: str) -> Tokenizer:
  """The tokenizer `data.tokenizer` names (module docstring).

  Raises:
    TokenizerError: an unknown kind, a missing file or one its library cannot read.
    ImportError: the library its kind needs is missing (one line: how to install it).
  """
  kind, _, path = str(spec).partition(":")
  if kind == "bytes" and not path:
    return BYTES
  if kind == "hf" and path:
    return HuggingFace(spec, path)
  if kind == "sentencepiece" and path:
    return SentencePiece(spec, path)
  raise TokenizerError(f"data.tokenizer={spec!r}; expected 'bytes', 'hf:PATH' (a "
                       "tokenizer.json) or 'sentencepiece:PATH' (a .model)")
