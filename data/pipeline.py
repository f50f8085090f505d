"""The grain pipeline: host-local numpy batches for one process of a (possibly multi-host) run.

A split is served in one of two modes (`data.in_memory`):
- in memory: the split is read once into arrays (`ArrayRows`), and deterministic transforms
  (normalisation) are applied to the whole split up front. Right for MNIST-1D, digits and
  CIFAR-10: a batch costs microseconds.
- streaming: each batch reads its records by index from the TFDS data source (`RecordRows`), in
  `data.workers` worker processes (grain's `mp_prefetch`), so host memory stays bounded whatever
  the split's size. Statistics for `data.normalize` come from one chunked pass over the training
  split. Samplers and options that need every label at once (`sampler="balanced"`,
  `class_weights="balanced"`, `keep_classes`) are in-memory only.
`"auto"` (the default) keeps a split in memory when every input has a fixed shape and the decoded
training and evaluation splits together take at most `AUTO_IN_MEMORY_BYTES` (2 GiB), and streams
otherwise (ImageNet's variable-sized JPEGs, or a large build). Both modes give the same batches
for the same seed (`data/batches.py`: order, process rows, resume).

With `data.keep_classes` set, every split (and the normalisation statistics) holds those labels
only: anomaly detection trains on the normal classes. Text sources (`data.seq_len` > 0) are
next-token windows of one token stream per split (`data/text.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Iterator

import grain
import numpy as np
from absl import flags

from data import curation, shared_batches, sources, worker_init
from data import preprocess as preprocess_lib
from data import synthetic as synthetic_lib
from data import text as text_lib
from data import transforms as transforms_lib
from data.batches import ArrayRows, EvalBatches, RecordRows, TrainBatches

Batch = dict[str, np.ndarray]
SAMPLERS = ("shuffle", "sequential", "balanced")
CLASS_WEIGHTS = ("none", "balanced")
IN_MEMORY = ("auto", "true", "false")
AUTO_IN_MEMORY_BYTES = 2 << 30


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
    streaming: whether batches read records from disk (False: the split is in memory).
    workers: worker processes that make batches (streaming only; 0: this process).
  """

  dataset: grain.MapDataset
  info: sources.SourceInfo
  global_batch_size: int
  num_examples: int
  steps_per_epoch: int
  stats: transforms_lib.Statistics | None
  class_weights: np.ndarray
  streaming: bool = False
  workers: int = 0

  def __iter__(self) -> Iterator[Batch]:
    return self.iterator()

  def iterator(self, prefetch: int = 0) -> grain.DatasetIterator:
    """A checkpointable grain iterator. Streaming with workers: each of `workers` processes makes
    every W-th batch, `max(prefetch, 2)` ahead, and hands batches of 1 MB or more over in
    recycled shared memory (`data.shared_batches`); otherwise `prefetch` batches are made ahead
    on a background thread. Close it (`.close()`) to stop the workers before it is exhausted."""
    if self.streaming and self.workers:
      if not flags.FLAGS.is_parsed():
        # grain's worker start reads its absl flags; a program that is not an absl app (a
        # notebook, pytest) has not parsed them, and their defaults are what we want.
        flags.FLAGS.mark_as_parsed()
      options = grain.MultiprocessingOptions(num_workers=self.workers,
                                             per_worker_buffer_size=max(prefetch, 2))
      tag = shared_batches.new_tag() if shared_batches.available() else None
      ds = self.dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
      ds = ds.map(shared_batches.send)
      # grain's own shared memory only for arrays of 1 MB or more (its default: every array):
      # a label array pickles faster than a segment is made, mapped and unlinked
      ds = grain.experimental.WithOptionsIterDataset(
          ds, grain.experimental.DatasetOptions(min_shm_size=shared_batches.MIN_BYTES))
      it = iter(ds.mp_prefetch(
          options, worker_init_fn=functools.partial(worker_init.init, os.getpid(), tag)))
      return shared_batches.OpenBatches(it, tag)
    options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                                prefetch_buffer_size=prefetch)
    return iter(self.dataset.to_iter_dataset(options))


def worker_count(data_config, train: bool, streaming: bool) -> int:
  """Worker processes of a pipeline: `data.workers` in training; in evaluation
  `data.eval_workers`, or `data.workers` when that is -1 (the default). Evaluation's workers run
  beside training's, which stay alive, so fewer of them bound the evaluation's memory."""
  if not streaming:
    return 0
  if not train and int(data_config.get("eval_workers", -1)) >= 0:
    return int(data_config.eval_workers)
  return int(data_config.workers)


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
                   train: bool, seed: int, num_batches: int | None = None,
                   stats: transforms_lib.Statistics | None = None,
                   synthetic: tuple[np.ndarray, np.ndarray] | None = None) -> Pipeline:
  """Builds the batches of `split` for one process.

  Args:
    data_config: `config.data` (source, batch sizes, normalisation, augmentation, sampling).
    split: a split of the source (`train`, `test`, `train[:90%]`, ...).
    process_index, process_count: this process and the number of processes.
    train: training batches (shuffled, augmented, endless) or evaluation batches (one pass).
    seed: base seed of shuffling and augmentation.
    num_batches: length of the training stream (defaults to effectively endless).
    stats: normalisation statistics to use instead of the source's own (an evaluation of
      another source normalised as the training data is).
    synthetic: training only, `data.synthetic`'s pool (inputs (P, ...) in stored units, labels
      (P,)), mixed into every batch at `data.synthetic.fraction` (`data/synthetic.py`).

  Raises:
    DataError: unknown source/split, batch larger than the split or not divisible by the
      process count, or labels out of range.
  """
  if data_config.seq_len > 0:
    return _text_pipeline(data_config, split, process_index, process_count, train=train,
                          seed=seed, num_batches=num_batches)
  info = sources.source_info(data_config)
  batch = data_config.batch_size if train else data_config.eval_batch_size
  field = "data.batch_size" if train else "data.eval_batch_size"
  if batch % process_count:
    raise sources.DataError(f"{field}={batch} is not divisible by the {process_count} processes")
  streaming = is_streaming(data_config, split)
  where = f"data.source={data_config.source!r} split {{!r}}"
  ops = tuple(data_config.image.train if train else data_config.image.eval)
  prepare = preprocess_lib.for_split(ops, data_config.image, train,
                                     lambda: sources.input_feature(data_config))
  given = stats
  if streaming:
    rows, weights, stats, per_example = _streaming_rows(data_config, split, info, where,
                                                        raw="decode" in ops)
  else:
    rows, weights, stats, per_example = _in_memory_rows(data_config, split, info, where, train)
  stats = given if given is not None else stats
  if prepare is not None and data_config.normalize != "none":
    raise sources.DataError(f"data.normalize={data_config.normalize!r} with data.image ops "
                            f"{ops}; images are normalised by the 'normalize' op with "
                            "data.image.mean/std: expected data.normalize='none'")
  n = len(rows)
  if train and batch > n:
    raise sources.DataError(f"{field}={batch} is larger than the {split!r} split of "
                            f"{data_config.source!r} ({n} examples)")

  common = dict(global_batch=batch, process_index=process_index, process_count=process_count,
                prepare=prepare,
                prepare_seed=int(np.random.SeedSequence([seed, 7]).generate_state(1)[0]))
  steps = transforms_lib.build(data_config.augment, stats, train, data_config.binarize,
                               data_config.dtype, pixels=getattr(prepare, "pixels", False))
  ahead = 0
  if not streaming and prepare is None:
    # The deterministic transforms ahead of the first random one (normalisation, binarisation)
    # act on each example alone: applied once to the whole split here, not to every batch.
    inputs = rows.inputs
    while ahead < len(steps) and not isinstance(steps[ahead], grain.transforms.RandomMap):
      inputs = steps[ahead].map({"inputs": inputs})["inputs"]
      ahead += 1
    rows = ArrayRows(inputs, rows.labels)
  # (With image ops, every transform runs on the prepared batch: the ops take stored pixels.)
  mix = None
  if train and synthetic is not None:
    mix = synthetic_lib.mixer(data_config, rows, synthetic, steps[:ahead], prepare,
                              batch // process_count)
  if train:
    ds: grain.MapDataset = TrainBatches(
        rows, per_example, seed=seed, sampler=data_config.sampler,
        num_batches=num_batches or sys.maxsize, **common)
    if mix is not None:
      ds = ds.random_map(mix, seed=int(np.random.SeedSequence([seed, 11]).generate_state(1)[0]))
  else:
    ds = EvalBatches(rows, per_example, **common)
  for i, t in enumerate(steps):
    if i < ahead:
      continue
    if isinstance(t, grain.transforms.RandomMap):
      # A distinct stream per transform: grain derives each batch's generator from (seed, index),
      # the global batch index even in a worker process, so workers do not change the stream.
      t_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
      ds = ds.random_map(t, seed=t_seed)
    else:
      ds = ds.map(t)
  return Pipeline(dataset=ds, info=info, global_batch_size=batch, num_examples=n,
                  steps_per_epoch=n // batch, stats=stats, class_weights=weights,
                  streaming=streaming, workers=worker_count(data_config, train, streaming))


def in_memory_setting(value: Any) -> str:
  """`data.in_memory` as one of `IN_MEMORY` (True/False and any letter case accepted).

  Raises:
    DataError: any other value.
  """
  text = str(value).strip().lower()
  if text not in IN_MEMORY:
    raise sources.DataError(f"data.in_memory={value!r}; expected 'auto', True or False")
  return text


def is_streaming(data_config, split: str) -> bool:
  """Whether `split` streams from disk (`data.in_memory`, module docstring)."""
  setting = in_memory_setting(data_config.in_memory)
  if setting != "auto":
    return setting == "false"
  size = sources.decoded_bytes(data_config, [data_config.train_split, split])
  return size is None or size > AUTO_IN_MEMORY_BYTES


def _noisy(data_config, split: str, info) -> sources.SplitArrays:
  """The split as loaded, curated as the run's training data (`data/curation.py`)."""
  where = f"data.source={data_config.source!r} split {split!r}"
  return curation.curate(data_config, split, sources.load_split(data_config, split),
                         info.num_classes,
                         lambda labels: check_labels(labels, info.num_classes, where))


def _in_memory_rows(data_config, split, info, where, train):
  """(rows, class weights, statistics, per-example weights) of a split held in memory."""
  keep = tuple(data_config.keep_classes)
  arrays = select_classes(_noisy(data_config, split, info), keep, info.num_classes,
                          where.format(split))
  if info.num_classes:
    check_labels(arrays.labels, info.num_classes, where.format(split))
  train_arrays = select_classes(_noisy(data_config, data_config.train_split, info), keep,
                                info.num_classes, where.format(data_config.train_split))
  stats = (None if data_config.normalize == "none" else
           transforms_lib.compute_statistics(train_arrays.inputs, data_config.normalize))
  weights = _class_weights(train_arrays.labels, info.num_classes, data_config.class_weights)
  n = len(arrays.labels)
  per_example = weights[arrays.labels] if train and info.num_classes else np.ones(n, np.float32)
  return ArrayRows(arrays.inputs, arrays.labels), weights, stats, per_example


def _streaming_rows(data_config, split, info, where, raw=False):
  """(rows, class weights, statistics, per-example weights) of a split read from disk; `raw`:
  inputs stay encoded for the `decode` op."""
  needs_labels = {"data.sampler": (data_config.sampler, "balanced", "'shuffle' or 'sequential'"),
                  "data.class_weights": (data_config.class_weights, "balanced", "'none'")}
  for name, (value, bad, expected) in needs_labels.items():
    if value == bad:
      raise sources.DataError(f"{name}={value!r} needs every label in memory; with streaming "
                              f"(data.in_memory={data_config.in_memory!r}) expected {expected}")
  if tuple(data_config.keep_classes):
    raise sources.DataError(f"data.keep_classes={tuple(data_config.keep_classes)} needs every "
                            "label in memory; with streaming expected ()")
  if data_config.get("exclude_examples", ""):
    raise sources.DataError(f"data.exclude_examples={data_config.exclude_examples!r} needs the "
                            "split in memory; with streaming expected ''")
  if data_config.get("label_noise") is not None and data_config.label_noise.rate:
    raise sources.DataError(f"data.label_noise.rate={data_config.label_noise.rate} needs every "
                            "label in memory; with streaming expected 0")
  rows = _record_rows(data_config, split, info, where.format(split), raw)
  stats = None
  if data_config.normalize != "none":
    stats = _streaming_statistics(data_config, info)
  weights = np.ones(max(info.num_classes, 1), np.float32)
  return rows, weights, stats, None


def _record_rows(data_config, split, info, where, raw=False) -> RecordRows:
  check = None
  if info.num_classes:
    check = functools.partial(check_labels, num_classes=info.num_classes, where=where)
  return RecordRows(sources.open_split(data_config, split, raw), info.input_key, info.label_key,
                    check)


# Statistics of a training split on disk: one chunked pass, kept for the life of the process
# (keyed by the dataset's fingerprint, so a changed dataset is read again).
_STATS_CACHE: dict[tuple[str, str, str], transforms_lib.Statistics] = {}


def clear_caches() -> None:
  """`sources.clear_caches` and the streaming statistics kept here."""
  sources.clear_caches()
  _STATS_CACHE.clear()


def _streaming_statistics(data_config, info) -> transforms_lib.Statistics:
  key = (info.fingerprint, data_config.train_split, data_config.normalize)
  if key not in _STATS_CACHE:
    rows = _record_rows(data_config, data_config.train_split, info,
                        f"data.source={data_config.source!r} split "
                        f"{data_config.train_split!r}")
    chunk = 4096
    chunks = (rows.take(slice(lo, min(lo + chunk, len(rows))))[0]
              for lo in range(0, len(rows), chunk))
    _STATS_CACHE[key] = transforms_lib.compute_statistics_chunked(chunks, data_config.normalize)
  return _STATS_CACHE[key]


def _text_pipeline(data_config, split, process_index, process_count, *, train, seed,
                   num_batches) -> Pipeline:
  """Next-token windows of a text source (module docstring)."""
  unsupported = {"data.normalize": (data_config.normalize, "none"),
                 "data.dtype": (data_config.dtype, "float32"),  # token ids are integers
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
  batch = data_config.batch_size if train else data_config.eval_batch_size
  field = "data.batch_size" if train else "data.eval_batch_size"
  if batch % process_count:
    raise sources.DataError(f"{field}={batch} is not divisible by the {process_count} processes")
  streaming = is_streaming(data_config, split)
  common = dict(global_batch=batch, process_index=process_index, process_count=process_count)
  ds, tokens, steps = text_lib.build(data_config, split, streaming, train=train, seed=seed,
                                     num_batches=num_batches or sys.maxsize, **common)
  return Pipeline(dataset=ds, info=info, global_batch_size=batch, num_examples=tokens,
                  steps_per_epoch=steps, stats=None, class_weights=np.ones(1, np.float32),
                  streaming=streaming, workers=worker_count(data_config, train, streaming))


def describe(pipeline: Pipeline) -> dict[str, Any]:
  """A JSON-able summary for logs and lineage."""
  return {**pipeline.info.lineage(), "global_batch_size": pipeline.global_batch_size,
          "num_examples": pipeline.num_examples, "steps_per_epoch": pipeline.steps_per_epoch}
