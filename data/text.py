"""Next-token windows of a text source (`data.seq_len` = L > 0). A streamed split packs its
documents into windows (`data/packing.py`); a split in memory is one token stream (bytes, or
the ids of `data.tokenizer`, `data/tokenizer.py`), cut into windows `inputs = stream[o:o+L]`,
`label = stream[o+1:o+L+1]`, `mask` (B, L).

Training epoch `e` starts its windows at a random phase in [0, L) drawn from
`default_rng([seed, e])` and visits them in a seeded permutation (or in order, with
`sampler="sequential"`). Evaluation windows tile the split so that every next-token target is
scored exactly once; the tail is masked.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import numpy as np

from data import packing, sources
from data import tokenizer as tokenizer_lib
from data.batches import Batch, EvalBatches, TrainBatches


class _Stream:
  """A token stream as a row store: its items are positions."""

  labels = None

  def __init__(self, stream: np.ndarray):
    self.stream = stream

  def __len__(self) -> int:
    return len(self.stream)


def _windows(stream: np.ndarray, starts: np.ndarray, seq_len: int,
             valid: np.ndarray) -> Batch:
  """Next-token windows at `starts` (B,): inputs stream[o:o+L], labels one step later; positions
  where `valid` (B, L) is False are masked and read token 0."""
  idx = starts[:, None] + np.arange(seq_len)[None, :]
  return {"inputs": stream[np.where(valid, idx, 0)].astype(np.int32),
          "label": stream[np.where(valid, idx + 1, 0)].astype(np.int32),
          "mask": valid.astype(np.float32)}


class TextTrainBatches(TrainBatches):
  """Seeded epochs of next-token windows (module docstring); the items are window starts."""

  _items_in_order = False  # even in sequential order, the starts have a seeded phase

  def __init__(self, stream: np.ndarray, seq_len: int, *args, **kwargs):
    super().__init__(_Stream(stream), None, *args, **kwargs)
    self._stream, self._len_seq = stream, seq_len
    # Windows per epoch: every phase in [0, L) leaves room for this many (inputs + 1 target).
    self.windows_per_epoch = len(stream) // seq_len - 1

  def _num_items(self) -> int:
    return self.windows_per_epoch

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(self._len_seq) + self._len_seq * np.arange(self.windows_per_epoch)
    return starts[rng.permutation(len(starts))] if self._sampler == "shuffle" else starts

  def _gather(self, idx: np.ndarray, mask: np.ndarray | None = None, first: int = 0) -> Batch:
    starts = idx[self._rows]
    return _windows(self._stream, starts, self._len_seq,
                    np.ones((len(starts), self._len_seq), bool))


class TextEvalBatches(EvalBatches):
  """Windows tiling the stream so each target stream[1:] is scored once; padding masked."""

  def __init__(self, stream: np.ndarray, seq_len: int, *args, **kwargs):
    super().__init__(_Stream(stream), None, *args, **kwargs)
    self._stream, self._len_seq = stream, seq_len

  def _num_items(self) -> int:
    return -(-(len(self._stream) - 1) // self._len_seq)

  def _gather(self, idx: np.ndarray, mask: np.ndarray) -> Batch:
    starts, mask = idx[self._rows] * self._len_seq, mask[self._rows]
    targets = starts[:, None] + np.arange(self._len_seq)[None, :] + 1
    return _windows(self._stream, starts, self._len_seq,
                    (targets < len(self._stream)) & (mask[:, None] > 0))


def token_stream(data_config: Any, split: str) -> np.ndarray:
  """A split in memory as one token stream: its bytes (uint8) for `data.tokenizer="bytes"`, else
  the split's text encoded by the tokenizer as one (int32; `data/tokenizer.py`)."""
  text = sources.load_text(data_config, split)
  tok = tokenizer_lib.get(data_config.get("tokenizer", "bytes"))
  if tok.fingerprint == "bytes":
    return text
  return _encoded(tok, text.tobytes())


@functools.lru_cache(maxsize=8)
def _encoded(tok: Any, text: bytes) -> np.ndarray:
  return tok.encode(text)


def build(data_config: Any, split: str, streaming: bool, *, train: bool, seed: int,
          num_batches: int, global_batch: int, process_index: int, process_count: int
          ) -> tuple[Any, int, int]:
  """(batch dataset, tokens in the split, steps per epoch) of `split`: packed documents read
  from disk when `streaming`, else windows of the split's stream in memory.

  Raises:
    DataError: a batch of windows that does not fit in one pass over the split.
  """
  seq_len = data_config.seq_len
  common = dict(global_batch=global_batch, process_index=process_index,
                process_count=process_count)
  if streaming:
    info = sources.source_info(data_config)
    source = sources.open_split(data_config, split)
    tok = tokenizer_lib.get(data_config.get("tokenizer", "bytes"))
    salt = "" if tok.fingerprint == "bytes" else f"/{tok.fingerprint}"
    digest = hashlib.sha256(f"{info.fingerprint}/{split}{salt}".encode()).hexdigest()[:16]
    cache = os.path.join(info.data_dir, f"strata-document-lengths-{digest}.npy")
    docs = packing._Documents(source, info.input_key,
                              packing.document_lengths(source, info.input_key, cache, tok.encode),
                              tok.encode)
    tokens = int(docs.lengths.sum())
    if train:
      ds = packing.PackedTrainBatches(docs, seq_len, seed=seed, sampler=data_config.sampler,
                                      num_batches=num_batches, **common)
    else:
      ds = packing.PackedEvalBatches(docs, seq_len, **common)
  else:
    stream = token_stream(data_config, split)
    tokens = len(stream)
    if train:
      ds = TextTrainBatches(stream, seq_len, seed=seed, sampler=data_config.sampler,
                            num_batches=num_batches, **common)
    else:
      ds = TextEvalBatches(stream, seq_len, **common)
  if not train:
    return ds, tokens, len(ds)
  if ds.steps_per_epoch < 1:
    raise sources.DataError(
        f"data.batch_size={global_batch} windows of data.seq_len={seq_len} do not fit in the "
        f"{split!r} split of {data_config.source!r} ({tokens} tokens, "
        f"{ds.windows_per_epoch} windows)")
  return ds, tokens, ds.steps_per_epoch
