"""Named sources: the offline builders and the public TFDS catalog, through one path.

`load_split(data_config, split)` prepares the source if needed (offline builders only), opens
it with `builder.as_data_source(split)` and returns its inputs and labels as numpy arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data import build_files, builders, folder, remote_data_dir, table, tfds_quiet
from data.errors import DataError as DataError  # sources.DataError, as callers know it

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """What a run needs to know about its source.

  Attributes:
    name: the config name (`mnist1d`, `mnist`, ...).
    tfds_name: the TFDS builder name and config (`strata_mnist1d/canonical`).
    version: the builder version string.
    data_dir: the resolved TFDS data directory.
    input_key, label_key: the features used as inputs and labels.
    num_classes: number of classes of the label feature (0 for a non-class label).
    split_sizes: examples per split.
    fingerprint: sha256 of the builder arguments and the prepared files (hex).
    encoding: a table's columns as encoded into its features (`data.table`); None otherwise.
  """

  name: str
  tfds_name: str
  version: str
  data_dir: str
  input_key: str
  label_key: str
  num_classes: int
  split_sizes: dict[str, int]
  fingerprint: str
  encoding: dict[str, Any] | None = None

  def lineage(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    if out["encoding"] is None:
      del out["encoding"]
    return out


@dataclasses.dataclass(frozen=True)
class SplitArrays:
  """One split in memory: `inputs` (N, ...) as stored, `labels` (N,)."""

  inputs: np.ndarray
  labels: np.ndarray


def _data_dir(data_config) -> str:
  """The local data dir: `data.data_dir`, or for a URL its local copy (data/remote_data_dir.py)."""
  if remote_data_dir.is_remote(data_config.data_dir):
    return remote_data_dir.cache_for(data_config.data_dir)
  return os.path.abspath(os.path.expanduser(data_config.data_dir or DEFAULT_DATA_DIR))


def _builder_overrides(data_config) -> dict[str, Any]:
  bc = data_config.builder_config
  return dict(bc.to_dict() if hasattr(bc, "to_dict") else bc)


def _builder(data_config):
  """Returns a prepared TFDS builder for `data_config.source`.

  Raises:
    DataError: the source is unknown, or a catalog dataset is not prepared and cannot be.
  """
  data_dir = _data_dir(data_config)
  remote = data_config.data_dir if remote_data_dir.is_remote(data_config.data_dir) else ""
  columns = ""  # a table's label and feature columns, read only for a table
  if data_config.source.startswith(table.PREFIX):
    columns = json.dumps([data_config.label, list(data_config.features)])
  try:
    return _cached_builder(data_config.source, data_dir,
                           json.dumps(_builder_overrides(data_config), sort_keys=True),
                           bool(data_config.download), columns, remote)
  except OSError as e:  # a data_dir that cannot be made, read or written: name the field
    raise DataError(f"data.data_dir={data_config.data_dir!r} ({data_dir}): cannot prepare or "
                    f"read data.source={data_config.source!r} there: {e.strerror or e} "
                    f"({getattr(e, 'filename', None) or data_dir}); expected a directory this "
                    "user can write") from None


@functools.cache
def _cached_builder(name: str, data_dir: str, overrides_json: str, download: bool,
                    columns_json: str = "", remote: str = ""):
  overrides = json.loads(overrides_json)
  if name.startswith(folder.PREFIX):
    return _own_builder(folder.StrataFolder, lambda: folder.folder_config(
        name[len(folder.PREFIX):], overrides), data_dir, remote)
  if name.startswith(table.PREFIX):
    label, features = json.loads(columns_json)
    return _own_builder(table.StrataTable, lambda: table.table_config(
        name[len(table.PREFIX):], overrides, label, tuple(features)), data_dir, remote)
  if name in builders.MNIST1D_VARIANTS:
    name, overrides = "mnist1d", {**builders.MNIST1D_VARIANTS[name], **overrides}
  if name in builders.OFFLINE_BUILDERS:
    cls = builders.OFFLINE_BUILDERS[name]
    make_config = builders.CONFIGURABLE.get(name)
    if overrides and make_config is None:
      raise DataError(f"data.builder_config={overrides} is not supported by source {name!r}; "
                      f"only {sorted(builders.CONFIGURABLE)} take builder arguments")
    # TFDS warns that a folder not yet prepared has no dataset_info.json
    with tfds_quiet.building():
      if make_config is not None:
        try:
          config = make_config(overrides)
        except ValueError as e:
          raise DataError(str(e)) from None
        # A config that TFDS already knows must be named, not passed again.
        make = lambda: cls(data_dir=data_dir,  # noqa: E731
                           config=config.name if not config.overrides else config)
      else:
        make = lambda: cls(data_dir=data_dir)  # noqa: E731

      def prepare(builder) -> None:
        print(f"preparing the offline dataset {name!r} in {builder.data_dir} (once; later runs "
              "reuse it)", file=sys.stderr, flush=True)
        builder.download_and_prepare()
      return remote_data_dir.prepared(make, prepare, data_dir, remote)

  if overrides:
    raise DataError(f"data.builder_config={overrides} is only supported by the sources "
                    f"{sorted(builders.CONFIGURABLE)}")

  def make():
    try:
      # TFDS warns that a folder not yet prepared has no dataset_info.json
      with tfds_quiet.building():
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS raises DatasetNotFoundError with a long catalog listing.
      raise DataError(
          f"data.source={name!r} is neither an offline source "
          f"({sorted([*builders.OFFLINE_BUILDERS, *builders.MNIST1D_VARIANTS])}) "
          f"nor a dataset in the TFDS catalog ({type(e).__name__})") from None

  def prepare(builder) -> None:
    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    extra = (", download_config=tfds.download.DownloadConfig(manual_dir='MANUAL_DIR')"
             if manual else "")
    how = (f"prepare it where the network is reachable with\n"
           f"  python -c \"import tensorflow_datasets as tfds; "
           f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare("
           f"file_format='array_record'{extra})\"\n"
           + ("(MANUAL_DIR holds the files the dataset's site provides; docs/data.md)\n"
              if manual else "") +
           f"and copy {data_dir}/{builder.name} {'to ' + remote if remote else 'here'}, or set "
           "data.download=True on a machine with network access")
    shown = remote or data_dir
    if not download:
      raise DataError(f"data.source={name!r}: dataset not prepared in data_dir={shown!r}; {how}")
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as e:
      raise DataError(f"data.source={name!r}: download into data_dir={shown!r} failed "
                      f"({type(e).__name__}: {str(e)[:200]}); {how}") from e

  return remote_data_dir.prepared(make, prepare, data_dir, remote)


def _own_builder(cls, make_config, data_dir: str, remote: str = ""):
  """A prepared builder of the user's own folder or table (`data.folder`, `data.table`): its
  errors, found while listing, reading or preparing, are DataErrors."""
  try:
    # TFDS logs a custom config's whole repr, and warns of a folder not yet prepared
    with tfds_quiet.building():
      config = make_config()
      config.cache = os.path.join(data_dir, cls.name, f"{config.name}.json")
      extras = (os.path.relpath(config.cache, data_dir).replace(os.sep, "/"),)
      return remote_data_dir.prepared(lambda: cls(data_dir=data_dir, config=config),
                                      lambda builder: builder.download_and_prepare(),
                                      data_dir, remote, extras)
  except folder.FolderError as e:  # and table.TableError
    raise DataError(str(e)) from None


def _keys(data_config, builder) -> tuple[str, str]:
  if data_config.seq_len > 0:  # a text corpus: one text feature, no labels
    key = data_config.input_key or "text"
    if key not in builder.info.features:
      raise DataError(f"data.input_key={key!r} is not a feature of {builder.name}; expected one "
                      f"of {sorted(builder.info.features.keys())}")
    return key, ""
  supervised = builder.info.supervised_keys or (None, None)
  text = [k for k, f in builder.info.features.items() if type(f).__name__ == "Text"]
  if supervised[1] is None and not data_config.label_key and text:
    raise DataError(f"data.source={data_config.source!r} is a text corpus with no labels "
                    f"(feature {text[0]!r}); set data.seq_len > 0 to train on next-token windows")
  input_key = data_config.input_key or supervised[0]
  label_key = data_config.label_key or supervised[1]
  features = builder.info.features
  for field, key in (("data.input_key", input_key), ("data.label_key", label_key)):
    if key is None or key not in features:
      raise DataError(f"{field}={key!r} is not a feature of {builder.name}; "
                      f"expected one of {sorted(features.keys())}")
  return input_key, label_key


def source_info(data_config) -> SourceInfo:
  """The `SourceInfo` of `data_config.source`, preparing an offline source if needed."""
  builder = _builder(data_config)
  input_key, label_key = _keys(data_config, builder)
  label_feature = builder.info.features[label_key] if label_key else None
  num_classes = int(getattr(label_feature, "num_classes", 0) or 0)
  splits = {name: int(s.num_examples) for name, s in builder.info.splits.items()}
  return SourceInfo(
      name=data_config.source,
      tfds_name=builder.info.full_name,
      version=str(builder.version),
      data_dir=str(builder.data_dir),
      input_key=input_key,
      label_key=label_key,
      num_classes=num_classes,
      split_sizes=splits,
      fingerprint=_cached_fingerprint(builder, tuple(sorted(splits))),
      encoding=builder.encoding() if hasattr(builder, "encoding") else None,
  )


@functools.cache
def _cached_fingerprint(builder, splits: tuple[str, ...]) -> str:
  return build_files.fingerprint(builder, list(splits))


def load_text(data_config, split: str) -> np.ndarray:
  """A text split as one (N,) uint8 stream: the `input_key` text of every record, in stored
  order, as bytes (a split of `tiny_shakespeare` or `pydoc_text` is one record)."""
  builder = _builder(data_config)
  key, _ = _keys(data_config, builder)
  return _cached_text(builder, split, key)


@functools.lru_cache(maxsize=8)
def _cached_text(builder, split: str, key: str) -> np.ndarray:
  source = _data_source(builder, split)
  parts = []
  for i in range(len(source)):
    text = source[i][key]
    parts.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
  return np.frombuffer(b"".join(parts), np.uint8)


def read_records(source: Any, keys: Any) -> list[dict[str, Any]]:
  """The decoded records `keys` of a TFDS data source, in that order, in one bulk read (in
  parallel on disk)."""
  keys = [int(k) for k in keys]
  if not keys:
    return []
  try:
    try:
      return list(source.__getitems__(keys))
    except (TypeError, AttributeError):  # tfds.testing.mock_data replaces the single reader only
      return [source[k] for k in keys]
  except RuntimeError as e:  # array_record's reader: a damaged file (Riegeli hash mismatch, ...)
    info = getattr(source, "dataset_info", None)
    where = (f"split {getattr(source, 'split', '?')!r} of {info.full_name} in {info.data_dir}"
             if info is not None else "a data split")
    raise DataError(f"{where} cannot be read: {str(e).splitlines()[0][:240]}; a prepared file "
                    "there is damaged: delete that folder so that it is prepared again (or "
                    "restore it)") from None


def _data_source(builder, split: str, raw_key: str | None = None):
  """`builder`'s data source of `split`; the feature `raw_key` (if any) is left encoded."""
  base = split.split("[")[0]
  # (A builder with no split metadata, such as TFDS's mock, is asked directly.)
  if builder.info.splits and base not in builder.info.splits:
    raise DataError(f"split {split!r} is not in {builder.info.full_name}; "
                    f"expected one of {sorted(builder.info.splits.keys())}")
  try:
    if raw_key:
      return builder.as_data_source(split=split,
                                    decoders={raw_key: tfds.decode.SkipDecoding()})
    return builder.as_data_source(split=split)
  except Exception as e:  # TFDS raises ValueError/AssertionError for bad slices
    raise DataError(f"split {split!r} of {builder.info.full_name} cannot be read: "
                    f"{type(e).__name__}: {e}") from None


def load_split(data_config, split: str) -> SplitArrays:
  """All of `split` in memory (inputs as stored; labels as int64 when they are classes or token
  ids, else as stored: a forecast's float targets).

  Raises:
    DataError: unknown split, naming the available ones.
  """
  builder = _builder(data_config)
  input_key, label_key = _keys(data_config, builder)
  return _cached_split(builder, split, input_key, label_key)


@functools.lru_cache(maxsize=16)
def _cached_split(builder, split: str, input_key: str, label_key: str) -> SplitArrays:
  source = _data_source(builder, split)
  n = len(source)
  # TFDS warns once that it decodes PNGs with PIL when OpenCV is not installed
  with tfds_quiet.quiet():
    records = read_records(source, range(n))  # one bulk read (0.39 s vs 0.58 s, MNIST-1D train)
  shapes = sorted({np.shape(r[input_key]) for r in records})
  if len(shapes) > 1:
    raise DataError(f"split {split!r} of {builder.info.full_name}: the inputs differ in shape "
                    f"({shapes[0]}, {shapes[-1]}, ...); expected data.image ops that bring them "
                    "to one size (data.image.train/eval = ('decode', 'resize', ...) with "
                    "data.image.size)")
  inputs = np.stack([np.asarray(r[input_key]) for r in records]) if n else np.zeros((0,))
  labels = np.asarray([r[label_key] for r in records]) if n else np.zeros((0,), np.int64)
  if np.issubdtype(labels.dtype, np.integer):
    labels = labels.astype(np.int64)
  return SplitArrays(inputs=inputs, labels=labels)


def open_split(data_config, split: str, raw_inputs: bool = False) -> Any:
  """The TFDS data source of `split`: random access to decoded records by index, nothing read
  yet (what a streaming pipeline reads from). `raw_inputs`: the input feature stays encoded
  (image bytes), for the `decode` preprocessing op."""
  builder = _builder(data_config)
  input_key, _ = _keys(data_config, builder)
  return _data_source(builder, split, input_key if raw_inputs else None)


def input_feature(data_config) -> Any:
  """The TFDS feature of the source's input (an `Image`'s `decode_example_np` decodes it)."""
  builder = _builder(data_config)
  return builder.info.features[_keys(data_config, builder)[0]]


def decoded_bytes(data_config, splits: list[str]) -> int | None:
  """Bytes the inputs of `splits` take decoded in memory, or None when an input has no fixed
  shape (variable-sized images) and the size is unknown without decoding every record."""
  builder = _builder(data_config)
  input_key, _ = _keys(data_config, builder)
  feature = builder.info.features[input_key]
  if type(feature).__name__ == "Text":  # as many bytes as the prepared files, near enough
    return sum(os.path.getsize(p) for s in sorted({s.split("[")[0] for s in splits})
               for p in build_files.split_files(builder, s))
  shape, dtype = getattr(feature, "shape", None), getattr(feature, "np_dtype", None)
  if shape is None or dtype is None or any(d is None or d < 0 for d in shape):
    return None
  per_example = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
  return per_example * sum(len(_data_source(builder, s)) for s in sorted(set(splits)))



def clear_caches() -> None:
  """Forgets every opened builder, split and fingerprint of this process (tests that swap the
  data under a name, such as TFDS's mock data)."""
  for cached in (_cached_builder, _cached_split, _cached_text, _cached_fingerprint):
    cached.cache_clear()
