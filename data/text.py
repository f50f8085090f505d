"""Next-token windows of a text source (`data.seq_len` = L > 0): one token stream per split
(bytes), cut into windows `inputs = stream[o:o+L]`, `label = stream[o+1:o+L+1]`, `mask` (B, L).

Training epoch `e` starts its windows at a random phase in [0, L) drawn from
`default_rng([seed, e])` and visits them in a seeded permutation (or in order, with
`sampler="sequential"`). Evaluation windows tile the split so that every next-token target is
scored exactly once; the tail is masked.
"""

from __future__ import annotations

import numpy as np

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
