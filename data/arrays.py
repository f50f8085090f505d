"""A split as whole arrays, the way a run's evaluation pipeline serves it: for the tools that need
every example at once (reports, reference features, PCA baselines)."""

from __future__ import annotations

from typing import Any

import numpy as np

from data.pipeline import build_pipeline


def split_arrays(data_config: Any, split: str, seed: int = 0,
                 keep_classes: tuple[int, ...] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, Any]:
  """(inputs (N, ...) as the model sees them, labels (N,), normalisation statistics) of `split`,
  through the evaluation pipeline of `data_config` (a run's `config.data`, seeded with its
  `config.seed`); `keep_classes` overrides `data.keep_classes` (`()`: every class)."""
  d = data_config
  if keep_classes is not None:
    d = d.copy_and_resolve_references()
    with d.unlocked():
      d.keep_classes = tuple(keep_classes)
  pipe = build_pipeline(d, split, train=False, seed=seed)
  xs, ys = [], []
  for batch in pipe:
    real = batch["mask"] > 0
    xs.append(batch["inputs"][real])
    ys.append(batch["label"][real])
  return np.concatenate(xs), np.concatenate(ys), pipe.stats
