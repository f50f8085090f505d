"""Known label noise for testing label-error detection (`data.label_noise`).

The labels of the training split's examples, wherever they are read (training, any slice of the
split such as a cross-validation fold, `data.split_arrays`), get a seeded share of wrong ones;
other splits are never touched, and the stored data neither. Whether an example is flipped, and
to what, is decided by a hash of (seed, its input bytes), so the decision follows the example
into any slice or order: each example is flipped with probability `rate` (the share is `rate` up
to binomial spread), and then
- `symmetric`: to one of the other K - 1 classes, uniformly;
- `pairs` (class-dependent): class c to (c + 1) mod K, the asymmetric noise of Patrini et al.
  2017 in its simplest form.
A flipped example's label always differs from its stored one, so the flips are recoverable as
`stored != noisy`. (Examples with identical inputs share their fate.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import ml_collections as mlc
import numpy as np

KINDS = ("symmetric", "pairs")


def defaults() -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.rate = 0.0             # probability that a training example's label is made wrong; 0 = none
  c.kind = "symmetric"     # symmetric|pairs
  c.seed = 0
  return c


def check(c: Any) -> None:
  """Raises ValueError naming the field for a rate outside [0, 1) or an unknown kind."""
  if not 0.0 <= c.rate < 1.0:
    raise ValueError(f"data.label_noise.rate={c.rate}; expected a share in [0, 1)")
  if c.kind not in KINDS:
    raise ValueError(f"data.label_noise.kind={c.kind!r}; expected one of {KINDS}")


def _uniforms(inputs: np.ndarray, seed: int) -> np.ndarray:
  """Two numbers in [0, 1) per example (N, 2), from a hash of (seed, the example's bytes)."""
  x = np.ascontiguousarray(inputs)
  out = np.empty((len(x), 2))
  for i, row in enumerate(x):
    digest = hashlib.blake2b(row.tobytes(), digest_size=16, key=str(seed).encode()).digest()
    out[i] = np.frombuffer(digest, np.uint64) / 2.0 ** 64
  return out


def apply(inputs: np.ndarray, labels: np.ndarray, num_classes: int, c: Any) -> np.ndarray:
  """`labels` (N,) of the examples `inputs` (N, ...) with the module docstring's flips (a copy;
  `labels` itself when rate is 0)."""
  if not c.rate:
    return labels
  if num_classes < 2:
    raise ValueError(f"data.label_noise.rate={c.rate} needs a classification source with two "
                     f"classes or more; this one has {num_classes}")
  u = _uniforms(inputs, int(c.seed))
  chosen = u[:, 0] < c.rate
  out = np.array(labels, copy=True)
  if c.kind == "pairs":
    out[chosen] = (out[chosen] + 1) % num_classes
  else:
    shift = 1 + np.minimum((u[chosen, 1] * (num_classes - 1)).astype(np.int64), num_classes - 2)
    out[chosen] = (out[chosen] + shift) % num_classes
  return out
