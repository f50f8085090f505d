"""Text past memory: documents stored as records, bytes as tokens, packed into fixed windows.

A streamed text split (`data.seq_len` = L > 0 with `data.in_memory` False, or "auto" past the
size limit) is a sequence of documents, one record each (`data.input_key`, default `text`),
tokenised as bytes (token id = byte value; no vocabulary file) or by `data.tokenizer`. An epoch
concatenates the documents in a seeded order (`default_rng([seed, e])`; stored order for
`sampler="sequential"`) into one virtual token stream and cuts it into windows of L inputs
and L next-token targets, `inputs = s[kL:kL+L]`, `label = s[kL+1:kL+L+1]`, visited in a seeded
order. A target in another document than its input is masked, so no window crosses a document
boundary unmasked; `segments` (B, L) numbers each input's document within its window, which the
Transformer LM turns into an attention mask (a token attends to its own document only).

Evaluation packs the documents in stored order and scores every token once, except each
document's first, which has no context.

Only the records of a batch are read. The document lengths (8 bytes a document) come from one
pass over the split, cached on disk beside the prepared files under the dataset's fingerprint.
Batch `i` is a pure function of (seed, i), so resume is exact and worker processes do not change
the stream.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from data import sources
from data import tokenizer as tokenizer_lib
from data.batches import Batch, EvalBatches, TrainBatches


def document_lengths(source: Any, key: str, cache_path: str | None,
                     encode: Any = None) -> np.ndarray:
  """Tokens per document (N,) int64 (`encode`: a tokenizer's, default bytes), from `cache_path`
  if it holds them, else one pass over `source` (written to `cache_path` atomically)."""
  encode = encode or tokenizer_lib.BYTES.encode
  if cache_path and os.path.exists(cache_path):
    return np.load(cache_path)
  n, chunk = len(source), 1024
  out = np.zeros(n, np.int64)
  for lo in range(0, n, chunk):
    records = sources.read_records(source, range(lo, min(lo + chunk, n)))
    out[lo:lo + len(records)] = [len(encode(r[key])) for r in records]
  if cache_path:
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    tmp = f"{cache_path}.{os.getpid()}.tmp.npy"
    np.save(tmp, out)
    os.replace(tmp, cache_path)
  return out


class _Documents:
  """A split's documents as a row store: `take(ids)` reads those records' tokens."""

  labels = None

  def __init__(self, source: Any, key: str, lengths: np.ndarray, encode: Any = None):
    self.source, self.key, self.lengths = source, key, lengths
    self.encode = encode or tokenizer_lib.BYTES.encode  # a tokenizer's, default bytes

  def __len__(self) -> int:
    return len(self.lengths)

  def read(self, ids: np.ndarray) -> dict[int, np.ndarray]:
    keys = sorted({int(i) for i in ids})
    records = sources.read_records(self.source, keys)
    return {k: self.encode(r[self.key]) for k, r in zip(keys, records)}


def _pack(docs: _Documents, order: np.ndarray, ends: np.ndarray, starts: np.ndarray,
          seq_len: int, total: int) -> Batch:
  """Windows at stream offsets `starts` (B,) of the documents `order` concatenated (cumulative
  ends `ends`): L inputs, L targets, the mask of targets in their input's document, segments."""
  pos = starts[:, None] + np.arange(seq_len + 1)[None, :]                 # (B, L + 1)
  valid = pos < total
  slot = np.searchsorted(ends, np.minimum(pos, total - 1), side="right")  # index into order
  doc = order[slot]
  offset = pos - (ends[slot] - docs.lengths[doc])
  text = docs.read(doc[valid])
  flat = np.zeros(pos.shape, np.int32)
  for d in np.unique(doc[valid]):
    where = (doc == d) & valid
    flat[where] = text[int(d)][offset[where]]
  same = (slot[:, 1:] == slot[:, :-1]) & valid[:, 1:]
  first = slot[:, :1]
  return {"inputs": flat[:, :-1], "label": flat[:, 1:], "mask": same.astype(np.float32),
          "segments": np.where(valid[:, :-1], slot[:, :-1] - first, -1).astype(np.int32)}


class PackedTrainBatches(TrainBatches):
  """Seeded epochs of packed windows (module docstring); the items are windows."""

  _items_in_order = False

  def __init__(self, docs: _Documents, seq_len: int, *args, **kwargs):
    super().__init__(docs, None, *args, **kwargs)
    self._docs, self._len_seq = docs, seq_len
    self._total = int(docs.lengths.sum())
    self.windows_per_epoch = max(self._total - 1, 0) // seq_len
    self._layout: tuple[int, np.ndarray, np.ndarray] | None = None

  def _num_items(self) -> int:
    return self.windows_per_epoch

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    windows = np.arange(self.windows_per_epoch)
    return rng.permutation(windows) if self._sampler == "shuffle" else windows

  def _epoch_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(document order, cumulative ends) of `epoch`'s virtual stream."""
    if self._layout is None or self._layout[0] != epoch:
      n = len(self._docs)
      rng = np.random.default_rng([self._seed, epoch, 1])
      order = rng.permutation(n) if self._sampler == "shuffle" else np.arange(n)
      self._layout = (epoch, order, np.cumsum(self._docs.lengths[order]))
    return self._layout[1], self._layout[2]

  def _batch(self, index: int) -> Batch:
    epoch, b = divmod(index, self.steps_per_epoch)
    windows = self._order(epoch)[b * self._global_batch:(b + 1) * self._global_batch]
    order, ends = self._epoch_layout(epoch)
    return _pack(self._docs, order, ends, windows[self._rows] * self._len_seq, self._len_seq,
                 self._total)


class PackedEvalBatches(EvalBatches):
  """The documents in stored order, packed and tiled; each token but a document's first scored
  once; padding masked."""

  def __init__(self, docs: _Documents, seq_len: int, *args, **kwargs):
    super().__init__(docs, None, *args, **kwargs)
    self._docs, self._len_seq = docs, seq_len
    self._total = int(docs.lengths.sum())
    self._order_ids = np.arange(len(docs))
    self._ends = np.cumsum(docs.lengths)

  def _num_items(self) -> int:
    return -(-max(self._total - 1, 0) // self._len_seq)

  def _batch(self, index: int) -> Batch:
    if not 0 <= index < len(self):
      raise IndexError(index)
    windows = np.arange(index * self._global_batch, (index + 1) * self._global_batch)
    batch = _pack(self._docs, self._order_ids, self._ends, windows[self._rows] * self._len_seq,
                  self._len_seq, self._total)
    real = (windows[self._rows] < self._num_items())[:, None]
    batch["mask"] = batch["mask"] * real
    return batch
