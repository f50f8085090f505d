"""Batch-level grain datasets: element `i` is this process's part of global batch `i`.

Elements are whole batches. Measured on this 2-core machine, grain's per-record shuffle/batch
costs 11.6 ms per batch of 100 (92 s for the MNIST-1D recipe's 8,000 steps, ten times its
training time), the batch-level dataset 0.3 ms. Batch `i` is a pure function of (seed, i), so
grain's iterator state is just the next index, a resumed run sees exactly the batches an
uninterrupted one would, and grain's worker processes (each computing every W-th batch) give the
same stream whatever their number.

A batch reads its examples from a row store: `ArrayRows` (a split in memory) or `RecordRows`
(a split on disk, read record by record through the TFDS data source: host memory stays bounded
whatever the split's size). Both give the same batches for the same seed.

Training batches: epoch `e` visits a permutation drawn from `default_rng([seed, e])` (or, with
`sampler="balanced"`, n draws with replacement weighted by inverse class frequency; with
`sampler="sequential"`, the stored order every epoch, as papers that slice `x[i*B:(i+1)*B]` do);
the remainder of an epoch that does not fill a global batch is dropped. Evaluation batches visit
every example exactly once in order; the last batch is padded with `mask = 0`.

Every process builds the same global batch order and keeps rows
`[process_index * B / P, (process_index + 1) * B / P)`, so the union over processes is the global
batch and a run's numbers do not depend on the process count.
"""

from __future__ import annotations

from typing import Any, Callable

import grain
import numpy as np

from data import shared_batches, sources

Batch = dict[str, np.ndarray]


class ArrayRows:
  """A split in memory: `inputs` (N, ...) and `labels` (N, ...) (integer classes, or float
  regression targets), read-only."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray):
    if np.issubdtype(labels.dtype, np.integer):
      # int32, the dtype the jitted steps take: an int64 batch would be converted on every call
      # (about 1% of a 1 ms MNIST-1D step).
      labels = labels.astype(np.int32)
    # Read-only views: a sequential batch is a slice of these, not a copy.
    inputs, labels = inputs.view(), labels.view()
    for a in (inputs, labels):
      a.flags.writeable = False
    self.inputs, self.labels = inputs, labels

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, idx: np.ndarray | slice, stack: bool = True) -> tuple[Any, np.ndarray]:
    """(inputs, labels) of examples `idx` (an index array, or a slice: views, no copy)."""
    del stack  # the inputs are one array already
    return self.inputs[idx], self.labels[idx]


class RecordRows:
  """A split on disk: records read by index from a TFDS data source (ArrayRecord), decoded by
  TFDS's numpy decoders, then `prepare`d one by one (images: crops to a common shape).

  Only the records of a batch are in memory. `labels` is None: nothing reads the whole split.
  """

  labels = None

  def __init__(self, source: Any, input_key: str, label_key: str,
               check: Callable[[np.ndarray], None] | None = None):
    self.source, self.input_key, self.label_key, self.check = source, input_key, label_key, check

  def __len__(self) -> int:
    return len(self.source)

  def records(self, idx: np.ndarray) -> list[dict[str, Any]]:
    """The decoded records `idx`, in that order."""
    return sources.read_records(self.source, idx)

  def take(self, idx: np.ndarray | slice, stack: bool = True) -> tuple[Any, np.ndarray]:
    """(inputs, labels) of records `idx`: inputs stacked, or as a list when `stack` is False
    (images of different sizes, before preprocessing)."""
    if isinstance(idx, slice):
      idx = np.arange(idx.start, idx.stop)
    records = self.records(idx)
    inputs = [r[self.input_key] for r in records]
    if stack:
      inputs = np.stack([np.asarray(x) for x in inputs])
    labels = np.asarray([r[self.label_key] for r in records])
    labels = labels.astype(np.int32 if np.issubdtype(labels.dtype, np.integer) else np.float32)
    if self.check is not None:
      self.check(labels)
    return inputs, labels


def _in_grain_worker() -> bool:
  """Whether this process is one of grain's `mp_prefetch` workers (grain 0.2's module flag)."""
  try:
    from grain._src.python.dataset.transformations import process_prefetch
  except ImportError:
    return False
  return bool(getattr(process_prefetch, "_is_in_worker_process", False))


def _batch_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
  """An empty batch array. In a grain worker it is in shared memory, which reaches the main
  process without a copy (an ImageNet batch of 256 is 154 MB): a recycled segment of
  `data.shared_batches`, else grain's own; under 1 MB (`shared_batches.MIN_BYTES`) or outside a
  worker, ordinary memory."""
  pooled = shared_batches.take(shape, dtype)
  if pooled is None and _in_grain_worker():
    pooled = shared_batches.grain_array(shape, dtype)
  return np.empty(shape, dtype) if pooled is None else pooled


class Batches(grain.MapDataset):
  """Base for batch-level map datasets over a row store (`ArrayRows` or `RecordRows`).

  `weights` (N,) are per-example loss weights (class weights) or None for ones. `prepare`
  (`data.preprocess.Preprocess`) runs on each example before the batch is stacked; its random
  ops draw from `default_rng([seed, p])`, p the example's position in the global stream.
  """

  def __init__(self, rows: Any, weights: np.ndarray | None, global_batch: int,
               process_index: int, process_count: int, prepare: Any = None,
               prepare_seed: int = 0):
    super().__init__([])
    self._prepare, self._prepare_seed = prepare, prepare_seed
    if weights is not None:
      weights = weights.view()
      weights.flags.writeable = False
    self._data, self._weights = rows, weights
    self._global_batch = global_batch
    local = global_batch // process_count
    self._rows = slice(process_index * local, (process_index + 1) * local)

  def _num_items(self) -> int:
    """Items (examples, or text windows) a pass over the split visits."""
    return len(self._data)

  def _gather(self, idx: np.ndarray | slice, mask: np.ndarray | None = None,
              first: int = 0) -> Batch:
    """The batch of items `idx` (an index array, or a slice for a run of consecutive items);
    `mask` None means every row is real; `first` is the stream position of the global batch's
    first example."""
    if isinstance(idx, slice):  # views, no copy: this runs once per training step
      rows = range(idx.start, idx.stop)[self._rows]
      idx = slice(rows.start, rows.stop)
    else:
      idx = idx[self._rows]
    inputs, labels = self._data.take(idx, stack=self._prepare is None)
    if self._prepare is not None:
      positions = range(first, first + self._global_batch)[self._rows]
      random = self._prepare.random
      out = None
      for i, (x, p) in enumerate(zip(inputs, positions)):
        rng = np.random.default_rng([self._prepare_seed, p]) if random else None
        if out is None:  # the first example sets the batch's shape and dtype
          first_example = self._prepare(x, rng)
          out = _batch_buffer((len(positions), *first_example.shape), first_example.dtype)
          out[0] = first_example
        else:
          self._prepare(x, rng, out=out[i])
      inputs = out
    weights = (np.ones(len(labels), np.float32) if self._weights is None else
               self._weights[idx].astype(np.float32, copy=False))
    if mask is not None:
      weights = mask[self._rows] * weights
    return {"inputs": inputs, "label": labels, "mask": weights}

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._batch(int(index))

  def _batch(self, index: int) -> Batch:
    raise NotImplementedError


class TrainBatches(Batches):
  """Batch `i` of an endless stream of seeded epochs (see module docstring)."""

  # The sequential sampler visits items 0, 1, 2, ...: a batch is a slice of the arrays.
  _items_in_order = True

  def __init__(self, *args, seed: int, sampler: str, num_batches: int, **kwargs):
    super().__init__(*args, **kwargs)
    self._seed, self._sampler, self._len = seed, sampler, num_batches
    if sampler == "balanced":
      labels = self._data.labels
      counts = np.bincount(labels)
      p = 1.0 / counts[labels]
      self._p = p / p.sum()
    self._cache: tuple[int, np.ndarray] | None = None

  def __len__(self) -> int:
    return self._len

  @property
  def steps_per_epoch(self) -> int:
    return self._num_items() // self._global_batch

  def _order(self, epoch: int) -> np.ndarray:
    """The items of `epoch` in visiting order (cached: consecutive batches share an epoch)."""
    if self._cache is None or self._cache[0] != epoch:
      self._cache = (epoch, self._draw(np.random.default_rng([self._seed, epoch])))
    return self._cache[1]

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    n = len(self._data)
    if self._sampler == "shuffle":
      return rng.permutation(n)
    if self._sampler == "sequential":
      return np.arange(n)
    return rng.choice(n, size=n, replace=True, p=self._p)

  def _batch(self, index: int) -> Batch:
    epoch, b = divmod(index, self.steps_per_epoch)
    lo, hi = b * self._global_batch, (b + 1) * self._global_batch
    first = index * self._global_batch
    if self._sampler == "sequential" and self._items_in_order:
      return self._gather(slice(lo, hi), first=first)
    return self._gather(self._order(epoch)[lo:hi], first=first)


class EvalBatches(Batches):
  """Every example once, in order, padded to whole global batches with mask 0."""

  def __len__(self) -> int:
    return -(-self._num_items() // self._global_batch)

  def _batch(self, index: int) -> Batch:
    if not 0 <= index < len(self):
      raise IndexError(index)
    idx = np.arange(index * self._global_batch, (index + 1) * self._global_batch)
    mask = (idx < self._num_items()).astype(np.float32)
    return self._gather(np.where(mask > 0, idx, 0), mask)
