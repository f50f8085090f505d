"""Known label noise for testing label-error detection (`data.label_noise`).

The training split's labels, as every consumer sees them (training, `data.split_arrays`, the
audit's cross-validation), get a seeded share of wrong labels; the evaluation split is never
touched, and the stored data neither. Exactly round(rate * N) examples, chosen by `seed` among
the split's N in stored order, are flipped:
- `symmetric`: to one of the other K - 1 classes, uniformly;
- `pairs` (class-dependent): class c to (c + 1) mod K, the asymmetric noise of Patrini et al.
  2017 in its simplest form.
A flipped example's label always differs from its stored one, so the flips are recoverable as
`stored != noisy`.
"""

from __future__ import annotations

from typing import Any

import ml_collections as mlc
import numpy as np

KINDS = ("symmetric", "pairs")


def defaults() -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.rate = 0.0             # share of the training split's labels made wrong; 0 = none
  c.kind = "symmetric"     # symmetric|pairs
  c.seed = 0
  return c


def check(c: Any) -> None:
  """Raises ValueError naming the field for a rate outside [0, 1) or an unknown kind."""
  if not 0.0 <= c.rate < 1.0:
    raise ValueError(f"data.label_noise.rate={c.rate}; expected a share in [0, 1)")
  if c.kind not in KINDS:
    raise ValueError(f"data.label_noise.kind={c.kind!r}; expected one of {KINDS}")


def apply(labels: np.ndarray, num_classes: int, c: Any) -> np.ndarray:
  """`labels` (N,) with the module docstring's flips (a copy; `labels` itself when rate is 0)."""
  if not c.rate:
    return labels
  if num_classes < 2:
    raise ValueError(f"data.label_noise.rate={c.rate} needs a classification source with two "
                     f"classes or more; this one has {num_classes}")
  n = len(labels)
  rng = np.random.default_rng(np.random.SeedSequence([int(c.seed), 9]))
  chosen = rng.choice(n, size=int(round(c.rate * n)), replace=False)
  out = np.array(labels, copy=True)
  if c.kind == "pairs":
    out[chosen] = (out[chosen] + 1) % num_classes
  else:
    shift = rng.integers(1, num_classes, size=len(chosen))  # never 0: always another class
    out[chosen] = (out[chosen] + shift) % num_classes
  return out
