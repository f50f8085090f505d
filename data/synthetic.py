"""Synthetic training examples mixed into every training batch (`data.synthetic`).

    data.synthetic.workdir = "runs/digits_cgan"   # a trained class-conditional generator
    data.synthetic.fraction = 0.5                 # of every training batch
    data.synthetic.per_class = 500                # the pool drawn once, before training
    data.synthetic.seed = 0

Before training, the generator (a conditional GAN, or a diffusion model with class guidance,
trained on the same source) draws `per_class` samples of every class: the pool (drawn by
`train/synthetic.py`, in the source's stored units, clipped to the training data's range). Each
training batch of B examples then has its last round(fraction * B) rows (per process) replaced
by pool examples drawn uniformly with replacement, seeded by the batch's index, so a resumed run
sees the same batches. The mixed batch then goes through the same normalisation and augmentation
as a real one. `fraction = 1` trains on samples alone: the classification accuracy score of a
generator (Ravuri & Vinyals 2019) is that run's accuracy on the real test split.
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections as mlc
import numpy as np

from data import sources


def defaults() -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = ""           # a trained class-conditional generator; "" = no synthetic data
  c.fraction = 0.0         # share of every training batch taken from its samples, in [0, 1]
  c.per_class = 500        # samples drawn per class, once, before training
  c.seed = 0               # seed of the samples and of which pool rows each batch takes
  return c


def check(c: Any) -> None:
  """Raises ValueError naming the field for a fraction outside [0, 1], a fraction without a
  generator (or a generator without a fraction), or a pool of no samples."""
  if not 0.0 <= c.fraction <= 1.0:
    raise ValueError(f"data.synthetic.fraction={c.fraction}; expected a share in [0, 1]")
  if bool(c.workdir) != (c.fraction > 0):
    raise ValueError(f"data.synthetic.workdir={c.workdir!r} with data.synthetic.fraction="
                     f"{c.fraction}; expected both set (a generator and a share of each batch) "
                     "or neither")
  if c.per_class < 1:
    raise ValueError(f"data.synthetic.per_class={c.per_class}; expected at least 1")


def enabled(data_config: Any) -> bool:
  s = data_config.get("synthetic")
  return s is not None and bool(s.workdir) and s.fraction > 0


def synthetic_rows(local_batch: int, fraction: float) -> int:
  """How many of a process's `local_batch` rows are synthetic: round(fraction * local_batch)."""
  return int(round(fraction * local_batch))


class MixSynthetic(grain.transforms.RandomMap):
  """Replaces the last `count` rows of a training batch with pool rows drawn with replacement
  (their loss weight 1). `inputs` (P, ...) must already be in the units of the batch's inputs
  at this point of the pipeline."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray, count: int):
    self.inputs, self.labels, self.count = inputs, labels, count

  def random_map(self, element: dict[str, np.ndarray], rng: np.random.Generator):
    if self.count == 0:
      return element
    n = len(element["label"])
    take = rng.integers(0, len(self.labels), size=self.count)
    out = dict(element)
    for key, pool in (("inputs", self.inputs), ("label", self.labels)):
      mixed = np.array(element[key], copy=True)  # batches may be read-only views of the split
      mixed[n - self.count:] = pool[take]
      out[key] = mixed
    mask = np.array(element["mask"], copy=True)
    mask[n - self.count:] = 1.0
    out["mask"] = mask
    return out


def mixer(data_config, rows, pool: tuple[np.ndarray, np.ndarray], ahead: list, prepare,
          local_batch: int) -> MixSynthetic:
  """The batch transform that mixes `data.synthetic`'s pool in: the pool put through the same
  per-example transforms the split was (`ahead`), in the split's dtype."""
  where = f"data.synthetic.workdir={data_config.synthetic.workdir!r}"
  if prepare is not None:
    raise sources.DataError(f"{where} with data.image ops: synthetic examples are mixed into "
                            "prepared batches only from in-memory arrays; expected no image ops")
  inputs, labels = pool
  sample = rows.take(slice(0, 1))[0]  # not empty: build_pipeline refuses a batch larger than it
  if inputs.shape[1:] != sample.shape[1:]:
    raise sources.DataError(f"{where}: its samples have shape {inputs.shape[1:]}; the training "
                            f"examples of data.source={data_config.source!r} have "
                            f"{sample.shape[1:]}")
  for step in ahead:
    inputs = step.map({"inputs": inputs})["inputs"]
  if np.issubdtype(sample.dtype, np.integer):
    info = np.iinfo(sample.dtype)
    inputs = np.clip(np.rint(inputs), info.min, info.max)
  inputs = inputs.astype(sample.dtype)
  count = synthetic_rows(local_batch, float(data_config.synthetic.fraction))
  return MixSynthetic(inputs, np.asarray(labels, np.int32), count)
