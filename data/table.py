"""`data.source = "table:PATH"`: your own table, a CSV file or a Parquet file (`pip install -e
'.[table]'` for pyarrow), without writing a TFDS builder.

    data.source = "table:patients.csv"
    data.label = "outcome"                # the label column: its values are the classes
    data.features = ("age", "sex", "bmi")  # () = every other column

Numeric columns are taken as float32; any other column (text, booleans) is categorical and
one-hot encoded over its values, sorted. The label's distinct values, sorted (integers in
numeric order), are the class names. A missing value is an error naming its column and row (fill
or drop it first). The encoding is part of the build: recorded in the run's lineage
(`dataset.encoding`) and in the dataset fingerprint. Split, storage and reuse as `folder:`
(data/folder.py): a stratified held-out fraction (`data.builder_config.test_fraction`,
`split_seed`), an offline TFDS build under data_dir (`strata_table/<hash>/`, the hash of the
file's path, size and modification time, the columns and the split arguments). `data.normalize =
"per_feature"` standardises the features with the training split's statistics, as for
`breast_cancer`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data.folder import FolderError, cached, check_split_args, held_out
from data.offline import OfflineBuilder

PREFIX = "table:"


class TableError(FolderError):
  """A table that cannot be a dataset (`data.sources` raises it as a DataError)."""


@dataclasses.dataclass
class TableConfig(tfds.core.BuilderConfig):
  """The file, the label column, the feature columns and the split arguments."""

  path: str = ""
  label: str = ""
  features: tuple[str, ...] = ()
  args: dict[str, Any] = dataclasses.field(default_factory=dict)
  cache: str = ""  # a JSON file for the encoding, so later runs read no table (folder.cached)


def _source(path: str) -> str:
  return f"data.source={PREFIX + path!r}"


def table_config(path: str, overrides: dict[str, Any] | None, label: str,
                 features: tuple[str, ...]) -> TableConfig:
  """The config of the table at `path` (not read yet).

  Raises:
    TableError: no such file, an unknown suffix, no label column named, a bad split argument.
  """
  args = check_split_args(overrides)
  root = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(root):
    raise TableError(f"{_source(path)}: {root} is not a file; expected a .csv or .parquet file")
  if not root.lower().endswith((".csv", ".parquet")):
    raise TableError(f"{_source(path)}: expected a file ending in .csv or .parquet")
  if not label:
    raise TableError(f"{_source(path)} needs data.label, the name of the label column")
  stat = os.stat(root)
  key = json.dumps({"path": root, "size": stat.st_size, "mtime": stat.st_mtime_ns,
                    "label": label, "features": list(features), "args": args}, sort_keys=True)
  return TableConfig(name=hashlib.sha256(key.encode()).hexdigest()[:16],
                     description=f"The table {root}.", path=root, label=label,
                     features=tuple(features), args=args)


def read(config: TableConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """(features (N, D) float32, labels (N,) int64, the encoding) of the table.

  Raises:
    TableError: an unreadable file, a missing column, a missing value, a label with one class.
  """
  import pandas as pd

  path, where = config.path, _source(config.path)
  try:
    if path.lower().endswith(".parquet"):
      try:
        import pyarrow  # noqa: F401
      except ImportError:
        raise TableError(f"{where}: reading Parquet needs pyarrow: pip install -e "
                         "'.[table]'") from None
      frame = pd.read_parquet(path)
    else:
      frame = pd.read_csv(path)
  except TableError:
    raise
  except Exception as e:
    raise TableError(f"{where}: {path} cannot be read as a table: {type(e).__name__}: "
                     f"{str(e).splitlines()[0][:160]}") from None
  columns = [str(c) for c in frame.columns]
  frame.columns = columns
  wanted = list(config.features) or [c for c in columns if c != config.label]
  for field, names in (("data.label", [config.label]), ("data.features", wanted)):
    missing = [n for n in names if n not in columns]
    if missing:
      raise TableError(f"{field}: column {missing[0]!r} is not in {path}; expected one of "
                       f"{columns}")
  if config.label in wanted:
    raise TableError(f"data.features includes the label column {config.label!r}; expected "
                     "the label apart from the features")
  for name in [config.label, *wanted]:
    empty = np.flatnonzero(frame[name].isna().to_numpy())
    if len(empty):
      raise TableError(f"{where}: column {name!r} has {len(empty)} missing value(s), the first "
                       f"in data row {empty[0] + 1}; expected every value (fill or drop them)")
  label = frame[config.label]
  if pd.api.types.is_integer_dtype(label):  # 0, 1, ..., 10 in numeric order, not "10" < "2"
    classes = [str(v) for v in sorted(label.unique())]
  else:
    classes = sorted(label.astype(str).unique())
  if len(classes) < 2:
    raise TableError(f"{where}: the label column {config.label!r} has one class {classes}; "
                     "expected at least two")
  labels = label.astype(str).map({c: i for i, c in enumerate(classes)})
  parts, encoding = [], []
  for name in wanted:
    column = frame[name]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
      parts.append(column.to_numpy(np.float32)[:, None])
      encoding.append({"column": name, "kind": "numeric"})
    else:
      values = column.astype(str)
      categories = sorted(values.unique())
      parts.append((values.to_numpy()[:, None] == np.asarray(categories)[None]).astype(
          np.float32))
      encoding.append({"column": name, "kind": "categorical", "categories": categories})
  features = np.concatenate(parts, axis=1)
  return features, labels.to_numpy(np.int64), {
      "label": config.label, "classes": classes, "features": encoding,
      "width": int(features.shape[1])}


class StrataTable(OfflineBuilder):
  """The rows of one table (module docstring); built with a `table_config`."""

  BUILDER_CONFIGS: list[TableConfig] = []

  @functools.cached_property
  def _table(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """`read` of the table, once."""
    return read(self.builder_config)

  def encoding(self) -> dict[str, Any]:
    """How the columns became the `features` vector and the label's classes."""
    return cached(self.builder_config.cache, lambda: self._table[2])

  def _info(self) -> tfds.core.DatasetInfo:
    encoding = self.encoding()
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "features": tfds.features.Tensor(shape=(encoding["width"],), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=encoding["classes"]),
        }),
        disable_shuffling=True,  # split index i is example i; the pipeline shuffles
        supervised_keys=("features", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    x, y, _ = self._table
    args = self.builder_config.args
    test = held_out(y, args["test_fraction"], args["split_seed"])
    print(f"preparing {len(y)} rows of {self.builder_config.path}", file=sys.stderr, flush=True)
    return {"train": self._generate_examples(x[~test], y[~test]),
            "test": self._generate_examples(x[test], y[test])}

  def _generate_examples(self, x: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, dict]]:
    for i in range(len(y)):
      yield i, {"features": x[i], "label": int(y[i])}

  def builder_arguments(self) -> dict[str, Any]:
    """What determines this build (part of the dataset fingerprint)."""
    c = self.builder_config
    return {"name": self.name, "version": str(self.version), "table": c.path,
            "config": c.name, "encoding": self.encoding(), **c.args}

