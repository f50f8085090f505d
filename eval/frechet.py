"""Frechet distance of a generative run's samples as an evaluator (`train/evaluators.py`): `samples`
draws of the live or restored generator (seeded, so the same state gives the same number) and the
training split, both in the features of a classifier trained by this codebase (`reference`), as
`python -m eval.generative` reports it.

    config.evals.fid = dict(type="frechet", every=1000, reference="runs/digits_cnn", samples=500)

Fields: `every` (steps; 0 = at the end), `reference` (the classifier's workdir; default the run's
`generative.reference`), `samples` (default the evaluation split's size), `seed`, `batch_size`
(generation chunks; default 500). Metrics: `frechet_distance`, and for a class-conditional
generator `conditional_accuracy` (the share of samples the reference classifies as asked).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import data as data_lib
from data import transforms
from eval import sample_quality
from train import evaluators, files
from train.errors import ConfigError

FIELDS = ("type", "every", "reference", "samples", "seed", "batch_size")


def check_reference(reference: str, source: str, field: str) -> sample_quality.Reference:
  """The classifier trained in `reference` whose features score samples of `source` data.

  Raises:
    ConfigError: no trained run in `reference`, or one trained on other data, naming `field`.
  """
  if not reference:
    raise ConfigError(f"{field}=''; expected the workdir of a classifier trained on data.source="
                      f"{source!r} (e.g. python -m train --config experiments/digits_cnn.py "
                      "--workdir runs/digits_cnn)")
  if not os.path.exists(os.path.join(reference, files.CONFIG)):
    raise ConfigError(f"{field}={reference!r} holds no trained classifier; train one on "
                      f"data.source={source!r} there first, e.g. python -m train --config "
                      f"experiments/{source}_cnn.py --workdir {reference}")
  ref = sample_quality.Reference(reference)
  if ref.config.data.source != source:
    raise ConfigError(f"{field}={reference!r} was trained on data.source="
                      f"{ref.config.data.source!r}; the run's is {source!r}")
  return ref


class Frechet:
  """The evaluator (see the module docstring); `Frechet(name, section, run)(state)`.

  `python -m eval.generative` builds one too (its `field` naming the flag) and draws its
  samples, features and training features from it."""

  def __init__(self, name: str, section: Any, run: Any, field: str = ""):
    where = f"evals.{name}"
    s = evaluators.fields(name, section, FIELDS)
    config, paradigm = run.config, run.paradigm
    if paradigm.generate is None:
      raise ConfigError(f"{where}.type='frechet' scores samples; paradigm={config.paradigm!r} "
                        "does not generate")
    self.reference = check_reference(s.get("reference") or config.generative.reference,
                                     config.data.source, field or f"{where}.reference")
    x_train, _, self.stats = data_lib.split_arrays(config.data, config.data.train_split,
                                                   config.seed)
    self.raw_train = transforms.denormalize(x_train, self.stats)
    self.train_features, _ = self.reference(self.raw_train)
    n = int(s.get("samples", 0))
    if not n:
      n = len(data_lib.split_arrays(config.data, config.data.eval_split, config.seed)[1])
    self.n, self.seed = n, int(s.get("seed", 0))
    self.chunk = min(n, int(s.get("batch_size", 0)) or 500)
    self.num_classes = int(getattr(run.model, "num_classes", 0) or 0)
    self.latent_shape = tuple(paradigm.latent_shape)
    self._generate = jax.jit(paradigm.generate)

  def compile(self, state: Any) -> None:
    """Compiles the generator for one chunk now, so that drawing `samples` times sampling alone."""
    z = jnp.zeros((self.chunk,) + self.latent_shape, jnp.float32)
    y = jnp.zeros((self.chunk,), jnp.int32) if self.num_classes else None
    self._generate = self._generate.lower(state, z, y, jax.random.key(0)).compile()

  def samples(self, state: Any, seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(`n` samples in raw data units, the classes asked for or None) drawn with `seed` (default
    the section's): latents from `key(seed)`, classes uniform from `default_rng(seed)`, the
    sampler's noise from `fold_in(key(seed), 1)`, in chunks of `batch_size` (the last one
    padded)."""
    seed = self.seed if seed is None else seed
    n, chunk = self.n, self.chunk
    pad = -n % chunk
    labels = (np.random.default_rng(seed).integers(0, self.num_classes, n)
              if self.num_classes else None)
    z = jax.random.normal(jax.random.key(seed), (n,) + self.latent_shape)
    z = jnp.concatenate([z, z[:pad]])
    y = None if labels is None else jnp.asarray(np.concatenate([labels, labels[:pad]]),
                                                jnp.int32)
    key = jax.random.fold_in(jax.random.key(seed), 1)
    fake = np.concatenate([
        np.asarray(self._generate(state, z[i:i + chunk], None if y is None else y[i:i + chunk],
                                  jax.random.fold_in(key, i)))
        for i in range(0, n + pad, chunk)])[:n]
    return transforms.denormalize(fake, self.stats), labels

  def __call__(self, state: Any) -> dict[str, float]:
    raw, labels = self.samples(state)
    features, predicted = self.reference(raw)
    out = {"frechet_distance": sample_quality.frechet_distance_of(features, self.train_features)}
    if labels is not None:
      out["conditional_accuracy"] = float(np.mean(predicted == labels))
    return out
