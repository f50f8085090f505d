"""The pool of `data.synthetic` (`data/synthetic.py`): class-conditional samples of a trained
generator, drawn once before training, in the source's stored units.

Each class gets `per_class` samples; noise and sampler keys come from `data.synthetic.seed`. The
generator's outputs are mapped back through its own normalisation statistics and clipped to the
range of its training inputs (a diffusion model's last step, or a GAN's tanh, can overshoot the
data's range by a little).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from data import transforms
from train import restored
from train.errors import ConfigError

CHUNK = 500  # samples per call of the compiled sampler


def pool(config) -> tuple[np.ndarray, np.ndarray]:
  """(inputs (C * per_class, ...) in stored units, labels (C * per_class,) int32).

  Raises:
    ConfigError: the run is not supervised, or the generator does not generate, is not
      class-conditional, was trained on another source or has another number of classes.
    CheckpointError: the generator's workdir holds no restorable checkpoint.
  """
  s = config.data.synthetic
  where = f"data.synthetic.workdir={s.workdir!r}"
  if config.paradigm != "supervised":
    raise ConfigError(f"{where}: synthetic examples are mixed into supervised training; this "
                      f"run's paradigm is {config.paradigm!r}")
  run = restored.restore(s.workdir)
  if run.paradigm.generate is None:
    raise ConfigError(f"{where} holds a paradigm={run.config.paradigm!r} run, which does not "
                      "generate samples; expected a class-conditional GAN or diffusion run")
  classes = int(getattr(run.model, "num_classes", 0) or 0)
  if classes == 0:
    raise ConfigError(f"{where} is unconditional (model.num_classes=0); labelled synthetic "
                      "examples need a class-conditional generator (e.g. digits_cgan)")
  if run.config.data.source != config.data.source:
    raise ConfigError(f"{where} was trained on data.source={run.config.data.source!r}; this "
                      f"run's is {config.data.source!r}")
  if classes != int(config.model.get("num_classes", classes)):
    raise ConfigError(f"{where} draws {classes} classes; model.num_classes="
                      f"{config.model.num_classes}")
  x_train, _, stats = run.split(run.config.data.train_split)
  real = transforms.denormalize(x_train, stats)
  labels = np.repeat(np.arange(classes, dtype=np.int32), int(s.per_class))
  n = len(labels)
  chunk = min(CHUNK, n)
  padded = np.concatenate([labels, labels[:-n % chunk]])  # whole chunks: one compiled sampler
  generate = jax.jit(run.paradigm.generate)
  key = jax.random.key(int(s.seed))
  out = []
  for i in range(0, len(padded), chunk):
    z = jax.random.normal(jax.random.fold_in(key, 2 * i), (chunk,) + run.paradigm.latent_shape)
    y = jnp.asarray(padded[i:i + chunk])
    out.append(np.asarray(generate(run.state, z, y, jax.random.fold_in(key, 2 * i + 1))))
  samples = transforms.denormalize(np.concatenate(out)[:n], stats)
  return np.clip(samples, real.min(), real.max()).astype(np.float32), labels
