"""What a run's training split holds beyond the stored data: known label noise
(`data.label_noise`, `data/label_noise.py`) and examples left out (`data.exclude_examples`).

Noise applies to the training split's examples wherever they are read (the split, or any slice
of it, such as a cross-validation fold); exclusion to the training split itself, by index into
the split as stored. Other splits, and the stored data, are never touched.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from data import label_noise, sources


def _base(split: str) -> str:
  return split.split("[")[0].strip()


def curate(data_config: Any, split: str, arrays: sources.SplitArrays, num_classes: int,
           check: Callable[[np.ndarray], None] | None = None) -> sources.SplitArrays:
  """`arrays` of `split` with the module docstring's changes (itself when none applies).
  `check(labels)` vets the stored labels before noise is added to them."""
  noise = data_config.get("label_noise")
  if noise is not None and noise.rate and _base(split) == _base(data_config.train_split):
    if check is not None:
      check(arrays.labels)
    arrays = sources.SplitArrays(inputs=arrays.inputs,
                                 labels=label_noise.apply(arrays.inputs, arrays.labels,
                                                          num_classes, noise))
  exclude = data_config.get("exclude_examples", "")
  if exclude and split == data_config.train_split:
    keep = np.ones(len(arrays.labels), bool)
    keep[excluded_rows(exclude, len(arrays.labels))] = False
    arrays = sources.SplitArrays(inputs=arrays.inputs[keep], labels=arrays.labels[keep])
  return arrays


def excluded_rows(path: str, n: int) -> np.ndarray:
  """The example indices (into the training split as stored) listed in the JSON file `path`
  (a list of integers, or an object with such a list under "indices").

  Raises:
    DataError: an unreadable file, or an index outside [0, n).
  """
  try:
    with open(path) as f:
      listed = json.load(f)
  except (OSError, ValueError) as e:
    raise sources.DataError(f"data.exclude_examples={path!r} cannot be read as JSON: "
                            f"{type(e).__name__}: {e}") from None
  if isinstance(listed, dict):
    listed = listed.get("indices", None)
  if not isinstance(listed, list) or not all(isinstance(i, int) for i in listed):
    raise sources.DataError(f"data.exclude_examples={path!r}; expected a JSON list of example "
                            "indices (or {\"indices\": [...]})")
  rows = np.asarray(listed, np.int64)
  bad = rows[(rows < 0) | (rows >= n)]
  if bad.size:
    raise sources.DataError(f"data.exclude_examples={path!r} lists index {int(bad[0])}; the "
                            f"training split has examples 0..{n - 1}")
  return rows
