"""The grain pipeline: host-local numpy batches for one process of a (possibly multi-host) run.

Elements of the grain `MapDataset`s here are whole batches. Measured on this 2-core machine,
grain's per-record shuffle/batch costs 11.6 ms per batch of 100 (92 s for the MNIST-1D recipe's
8,000 steps, ten times its training time), the batch-level dataset 0.3 ms. Batch `i` is a pure
function of (seed, i), so grain's iterator state is just the next index and a resumed run sees
exactly the batches an uninterrupted one would.

Training batches: epoch `e` visits a permutation drawn from `default_rng([seed, e])` (or, with
`sampler="balanced"`, n draws with replacement weighted by inverse class frequency; with
`sampler="sequential"`, the stored order every epoch, as papers that slice `x[i*B:(i+1)*B]` do); the
remainder of an epoch that does not fill a global batch is dropped. Evaluation batches visit
every example exactly once in order; the last batch is padded with `mask = 0`. With
`data.keep_classes` set, every split (and the normalisation statistics) holds those labels only:
anomaly detection trains on the normal classes.

Text sources (`data.seq_len` = L > 0) are one token stream per split (bytes), cut into next-token
windows: `inputs = stream[o:o+L]`, `label = stream[o+1:o+L+1]`, `mask` (B, L). Training epoch `e`
starts its windows at a random phase in [0, L) drawn from `default_rng([seed, e])` and visits
them in a seeded permutation (or in order, with `sampler="sequential"`). Evaluation windows tile
the split so that every next-token target is scored exactly once; the tail is masked.

Every process builds the same global batch and keeps rows
`[process_index * B / P, (process_index + 1) * B / P)`, so the union over processes is the global
batch and a run's numbers do not depend on the process count.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Iterator

import grain
import numpy as np

from data import sources
from data import transforms as transforms_lib

Batch = dict[str, np.ndarray]
SAMPLERS = ("shuffle", "sequential", "balanced")
CLASS_WEIGHTS = ("none", "balanced")


class _Batches(grain.MapDataset):
  """Base for batch-level map datasets over in-memory arrays."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               global_batch: int, process_index: int, process_count: int):
    super().__init__([])
    if np.issubdtype(labels.dtype, np.integer):
      # int32, the dtype the jitted steps take: an int64 batch would be converted on every call
      # (about 1% of a 1 ms MNIST-1D step).
      labels = labels.astype(np.int32)
    # Read-only views: a sequential batch is a slice of these, not a copy (`_gather`).
    inputs, labels, weights = (a.view() for a in (inputs, labels, weights))
    for a in (inputs, labels, weights):
      a.flags.writeable = False
    self._inputs, self._labels, self._weights = inputs, labels, weights
    self._global_batch = global_batch
    local = global_batch // process_count
    self._rows = slice(process_index * local, (process_index + 1) * local)

  def _num_items(self) -> int:
    """Items (examples, or text windows) a pass over the split visits."""
    return len(self._labels)

  def _gather(self, idx: np.ndarray | slice, mask: np.ndarray | None = None) -> Batch:
    """The batch of items `idx` (an index array, or a slice for a run of consecutive items);
    `mask` None means every row is real."""
    if isinstance(idx, slice):  # views, no copy: this runs once per training step
      rows = range(idx.start, idx.stop)[self._rows]
      idx = slice(rows.start, rows.stop)
    else:
      idx = idx[self._rows]
    weights = self._weights[idx]
    if mask is not None:
      weights = mask[self._rows] * weights
    return {"inputs": self._inputs[idx], "label": self._labels[idx],
            "mask": weights.astype(np.float32, copy=False)}

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._batch(int(index))

  def _batch(self, index: int) -> Batch:
    raise NotImplementedError


class TrainBatches(_Batches):
  """Batch `i` of an endless stream of seeded epochs (see module docstring)."""

  # The sequential sampler visits items 0, 1, 2, ...: a batch is a slice of the arrays.
  _items_in_order = True

  def __init__(self, *args, seed: int, sampler: str, num_batches: int, **kwargs):
    super().__init__(*args, **kwargs)
    self._seed, self._sampler, self._len = seed, sampler, num_batches
    if sampler == "balanced":
      counts = np.bincount(self._labels)
      p = 1.0 / counts[self._labels]
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
    n = len(self._labels)
    if self._sampler == "shuffle":
      return rng.permutation(n)
    if self._sampler == "sequential":
      return np.arange(n)
    return rng.choice(n, size=n, replace=True, p=self._p)

  def _batch(self, index: int) -> Batch:
    epoch, b = divmod(index, self.steps_per_epoch)
    lo, hi = b * self._global_batch, (b + 1) * self._global_batch
    if self._sampler == "sequential" and self._items_in_order:
      return self._gather(slice(lo, hi))
    return self._gather(self._order(epoch)[lo:hi])


class EvalBatches(_Batches):
  """Every example once, in order, padded to whole global batches with mask 0."""

  def __len__(self) -> int:
    return -(-self._num_items() // self._global_batch)

  def _batch(self, index: int) -> Batch:
    if not 0 <= index < len(self):
      raise IndexError(index)
    idx = np.arange(index * self._global_batch, (index + 1) * self._global_batch)
    mask = (idx < self._num_items()).astype(np.float32)
    return self._gather(np.where(mask > 0, idx, 0), mask)


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
    super().__init__(stream, stream, np.ones(1, np.float32), *args, **kwargs)
    self._len_seq = seq_len
    # Windows per epoch: every phase in [0, L) leaves room for this many (inputs + 1 target).
    self.windows_per_epoch = len(stream) // seq_len - 1

  def _num_items(self) -> int:
    return self.windows_per_epoch

  def _draw(self, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(self._len_seq) + self._len_seq * np.arange(self.windows_per_epoch)
    return starts[rng.permutation(len(starts))] if self._sampler == "shuffle" else starts

  def _gather(self, idx: np.ndarray, mask: np.ndarray | None = None) -> Batch:
    starts = idx[self._rows]
    return _windows(self._inputs, starts, self._len_seq,
                    np.ones((len(starts), self._len_seq), bool))


class TextEvalBatches(EvalBatches):
  """Windows tiling the stream so each target stream[1:] is scored once; padding masked."""

  def __init__(self, stream: np.ndarray, seq_len: int, *args, **kwargs):
    super().__init__(stream, stream, np.ones(1, np.float32), *args, **kwargs)
    self._len_seq = seq_len

  def _num_items(self) -> int:
    return -(-(len(self._inputs) - 1) // self._len_seq)

  def _gather(self, idx: np.ndarray, mask: np.ndarray) -> Batch:
    starts, mask = idx[self._rows] * self._len_seq, mask[self._rows]
    targets = starts[:, None] + np.arange(self._len_seq)[None, :] + 1
    return _windows(self._inputs, starts, self._len_seq,
                    (targets < len(self._inputs)) & (mask[:, None] > 0))


@dataclasses.dataclass
class Pipeline:
  """A split's batches for this process.

  Attributes:
    dataset: grain MapDataset whose element `i` is this process's part of global batch `i`.
    info: the source's `SourceInfo` (name, version, fingerprint, classes).
    global_batch_size: examples per step across all processes.
    num_examples: examples in the split.
    steps_per_epoch: full global batches per pass over the split.
    stats: normalisation statistics from the training split (None when `normalize="none"`).
    class_weights: (num_classes,) weights folded into the training `mask` (ones when unused).
  """

  dataset: grain.MapDataset
  info: sources.SourceInfo
  global_batch_size: int
  num_examples: int
  steps_per_epoch: int
  stats: transforms_lib.Statistics | None
  class_weights: np.ndarray

  def __iter__(self) -> Iterator[Batch]:
    return iter(self.dataset.to_iter_dataset())

  def iterator(self, prefetch: int = 0) -> grain.DatasetIterator:
    """A checkpointable grain iterator, with `prefetch` batches made on a background thread."""
    options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                                prefetch_buffer_size=prefetch)
    return iter(self.dataset.to_iter_dataset(options))


def _class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
  if mode == "none":
    return np.ones(max(num_classes, 1), np.float32)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  # scikit-learn's "balanced": n / (k * count), so the mean weight over the split is 1.
  w = len(labels) / (num_classes * np.maximum(counts, 1))
  return w.astype(np.float32)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Raises a clear error for a label outside [0, num_classes)."""
  if len(labels) == 0:
    return
  lo, hi = int(labels.min()), int(labels.max())
  if lo < 0 or hi >= num_classes:
    bad = lo if lo < 0 else hi
    raise sources.DataError(
        f"{where}: label {bad} is out of range for num_classes={num_classes} "
        f"(expected labels in [0, {num_classes - 1}])")


def select_classes(arrays: sources.SplitArrays, keep: tuple[int, ...], num_classes: int,
                   where: str) -> sources.SplitArrays:
  """The examples of `arrays` whose label is in `keep` (all of them when `keep` is empty).

  Raises:
    DataError: a class outside [0, num_classes), or a selection that leaves no example.
  """
  if not keep:
    return arrays
  bad = [k for k in keep if not 0 <= k < max(num_classes, 1)]
  if bad:
    raise sources.DataError(f"data.keep_classes={tuple(keep)}: class {bad[0]} is not a label of "
                            f"{where} (expected classes in [0, {num_classes - 1}])")
  rows = np.isin(arrays.labels, np.asarray(keep))
  if not rows.any():
    raise sources.DataError(f"data.keep_classes={tuple(keep)} leaves no example in {where}")
  return sources.SplitArrays(inputs=arrays.inputs[rows], labels=arrays.labels[rows])


def build_pipeline(data_config, split: str, process_index: int = 0, process_count: int = 1, *,
                   train: bool, seed: int, num_batches: int | None = None) -> Pipeline:
  """Builds the batches of `split` for one process.

  Args:
    data_config: `config.data` (source, batch sizes, normalisation, augmentation, sampling).
    split: a split of the source (`train`, `test`, `train[:90%]`, ...).
    process_index, process_count: this process and the number of processes.
    train: training batches (shuffled, augmented, endless) or evaluation batches (one pass).
    seed: base seed of shuffling and augmentation.
    num_batches: length of the training stream (defaults to effectively endless).

  Raises:
    DataError: unknown source/split, batch larger than the split or not divisible by the
      process count, or labels out of range.
  """
  if data_config.seq_len > 0:
    return _text_pipeline(data_config, split, process_index, process_count, train=train,
                          seed=seed, num_batches=num_batches)
  info = sources.source_info(data_config)
  keep = tuple(data_config.keep_classes)
  where = f"data.source={data_config.source!r} split {{!r}}"
  arrays = select_classes(sources.load_split(data_config, split), keep, info.num_classes,
                          where.format(split))
  batch = data_config.batch_size if train else data_config.eval_batch_size
  field = "data.batch_size" if train else "data.eval_batch_size"
  if batch % process_count:
    raise sources.DataError(f"{field}={batch} is not divisible by the {process_count} processes")
  n = len(arrays.labels)
  if train and batch > n:
    raise sources.DataError(f"{field}={batch} is larger than the {split!r} split of "
                            f"{data_config.source!r} ({n} examples)")
  if info.num_classes:
    check_labels(arrays.labels, info.num_classes, where.format(split))

  train_arrays = select_classes(sources.load_split(data_config, data_config.train_split), keep,
                                info.num_classes, where.format(data_config.train_split))
  stats = (None if data_config.normalize == "none" else
           transforms_lib.compute_statistics(train_arrays.inputs, data_config.normalize))
  weights = _class_weights(train_arrays.labels, info.num_classes, data_config.class_weights)
  per_example = weights[arrays.labels] if train and info.num_classes else np.ones(n, np.float32)

  common = dict(global_batch=batch, process_index=process_index, process_count=process_count)
  steps = transforms_lib.build(data_config.augment, stats, train, data_config.binarize)
  # The deterministic transforms ahead of the first random one (normalisation, binarisation)
  # act on each example alone: applied once to the whole split here, not to every batch.
  inputs, ahead = arrays.inputs, 0
  while ahead < len(steps) and not isinstance(steps[ahead], grain.transforms.RandomMap):
    inputs = steps[ahead].map({"inputs": inputs})["inputs"]
    ahead += 1
  if train:
    ds: grain.MapDataset = TrainBatches(
        inputs, arrays.labels, per_example, seed=seed, sampler=data_config.sampler,
        num_batches=num_batches or sys.maxsize, **common)
  else:
    ds = EvalBatches(inputs, arrays.labels, per_example, **common)
  for i, t in enumerate(steps):
    if i < ahead:
      continue
    if isinstance(t, grain.transforms.RandomMap):
      # A distinct stream per transform: grain derives each batch's generator from (seed, index).
      t_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
      ds = ds.random_map(t, seed=t_seed)
    else:
      ds = ds.map(t)
  return Pipeline(dataset=ds, info=info, global_batch_size=batch, num_examples=n,
                  steps_per_epoch=n // batch, stats=stats, class_weights=weights)


def _text_pipeline(data_config, split, process_index, process_count, *, train, seed,
                   num_batches) -> Pipeline:
  """Next-token windows of a text source (module docstring)."""
  unsupported = {"data.normalize": (data_config.normalize, "none"),
                 "data.class_weights": (data_config.class_weights, "none"),
                 "data.binarize": (data_config.binarize, False),
                 "data.keep_classes": (tuple(data_config.keep_classes), ()),
                 "data.augment.shift": (data_config.augment.shift, 0),
                 "data.augment.noise_std": (data_config.augment.noise_std, 0.0),
                 "data.augment.crop_padding": (data_config.augment.crop_padding, 0),
                 "data.augment.flip": (data_config.augment.flip, False)}
  for field, (value, default) in unsupported.items():
    if value != default:
      raise sources.DataError(f"{field}={value!r} does not apply to next-token windows "
                              f"(data.seq_len={data_config.seq_len}); expected {default!r}")
  if data_config.sampler == "balanced":
    raise sources.DataError("data.sampler='balanced' does not apply to next-token windows; "
                            "expected 'shuffle' or 'sequential'")
  info = sources.source_info(data_config)
  stream = sources.load_text(data_config, split)
  batch = data_config.batch_size if train else data_config.eval_batch_size
  field = "data.batch_size" if train else "data.eval_batch_size"
  if batch % process_count:
    raise sources.DataError(f"{field}={batch} is not divisible by the {process_count} processes")
  seq_len = data_config.seq_len
  common = dict(global_batch=batch, process_index=process_index, process_count=process_count)
  if train:
    ds = TextTrainBatches(stream, seq_len, seed=seed, sampler=data_config.sampler,
                          num_batches=num_batches or sys.maxsize, **common)
    if ds.steps_per_epoch < 1:
      raise sources.DataError(
          f"{field}={batch} windows of data.seq_len={seq_len} do not fit in the {split!r} split "
          f"of {data_config.source!r} ({len(stream)} tokens, {ds.windows_per_epoch} windows)")
    steps = ds.steps_per_epoch
  else:
    ds = TextEvalBatches(stream, seq_len, **common)
    steps = len(ds)
  return Pipeline(dataset=ds, info=info, global_batch_size=batch, num_examples=len(stream),
                  steps_per_epoch=steps, stats=None, class_weights=np.ones(1, np.float32))


def describe(pipeline: Pipeline) -> dict[str, Any]:
  """A JSON-able summary for logs and lineage."""
  return {**pipeline.info.lineage(), "global_batch_size": pipeline.global_batch_size,
          "num_examples": pipeline.num_examples, "steps_per_epoch": pipeline.steps_per_epoch}
