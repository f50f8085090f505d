"""The shared recipe of the reconstruction experiments (not an experiment itself).

Digits are scaled to [0, 1] (`normalize="unit"`: pixel / 16) and MNIST-1D signals are normalised
with one global mean and standard deviation, both from the training split. Models: a
convolutional encoder of stride-2 3x3 convolutions (32, 64 channels: 8x8 -> 4x4 -> 2x2) mirrored by
transposed convolutions, with an 8-dimensional code. Adam, cosine decay, batch 64.
"""

from train import config as config_lib

ARGS = ("tiny",)  # the experiment arguments (besides none)


def digits(model: str, steps: int = 6000, **model_fields):
  """A reconstruction config for scikit-learn's digits with model `autoencoder.<model>`."""
  c = config_lib.base("reconstruction")
  c.data.source = "digits"
  c.data.normalize = "unit"
  c.data.batch_size = 64
  c.data.eval_batch_size = 360
  c.model = dict(name=f"autoencoder.{model}", input_shape=(8, 8, 1), latent_dim=8,
                 encoder="conv", features=(32, 64), ndim=2, **model_fields)
  c.optim.name = "adam"
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "cosine"
  c.train.steps = steps
  c.train.log_every = 500
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  return c


def denoising(level: float):
  """A digits denoising autoencoder dropping a fraction `level` of the pixels in training, under
  per-pixel normalisation (a dropped pixel is 0, its training mean)."""
  c = digits("DenoisingAutoencoder", likelihood="gaussian", corruption="mask",
             corruption_level=level)
  c.data.normalize = "per_feature"
  return c


def tiny(c, name: str):
  """The shared tiny mode: a narrow model for 20 steps."""
  c.model.features = (4, 8)
  c.reconstruction.iwae_samples = min(c.reconstruction.iwae_samples, 4)
  return config_lib.tiny(c)


def finish(c, name: str, arg: str | None):
  """Applies the experiment argument (`tiny` or none) and locks the config."""
  if arg == "tiny":
    tiny(c, name)
  elif arg:
    raise config_lib.unknown_arg(name, arg, ARGS)
  return config_lib.lock(c)


def mnist1d(model: str, steps: int = 8000, **model_fields):
  """A reconstruction config for MNIST-1D (4,000 / 1,000 signals of length 40) with a 1-D
  convolutional `autoencoder.<model>`: 40 -> 20 -> 10 -> 5 with (32, 64, 64) channels."""
  c = digits(model, steps, **model_fields)
  c.data.source = "mnist1d"
  c.data.normalize = "global"
  c.data.batch_size = 100
  c.data.eval_batch_size = 500
  c.model.input_shape = (40,)
  c.model.features = (32, 64, 64)
  c.model.ndim = 1
  return c
