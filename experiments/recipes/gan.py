"""The shared recipe of the GAN experiments (not an experiment itself).

Digits are scaled to [0, 1] (`normalize="unit"`) for a sigmoid generator; MNIST-1D signals are
normalised with one global mean and standard deviation for a linear one. DCGAN layouts: the
generator projects z to a (size / 2^L) map and doubles it L times with 4x4 (digits) or 5 (MNIST-1D)
transposed convolutions and batch norm; the discriminator mirrors it with stride-2 convolutions
and leaky ReLU. Batch 64, an average of the generator (decay 0.999) for every sample reported.
Two stabilisations: `r1` is the non-saturating loss with the R1 penalty (gamma 0.1) and Adam
2e-4 (beta1 0.5) for both networks; `hinge_sn` is the hinge loss with a spectrally normalised
discriminator and TTUR (Adam with beta1 0, beta2 0.9; 1e-4 for the generator, 4e-4 for the
discriminator), as in Miyato & Koyama (2018). Sample quality is scored by `python -m eval.generative` in the features of the
run's reference classifier (`generative.reference`), which is trained first:

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
"""

from train import config as config_lib

ARGS = ("tiny",)  # the experiment arguments (besides none)


def digits(recipe: str = "r1", steps: int = 6000, **model_fields):
  """A GAN config for scikit-learn's digits (8x8, 1,437 training images)."""
  c = config_lib.base("adversarial")
  c.data.source = "digits"
  c.data.normalize = "unit"
  c.data.batch_size = 64
  c.data.eval_batch_size = 360
  # every field spelled out, so any can be overridden from the command line
  c.model = dict(dict(name="gan.GAN", data_shape=(8, 8, 1), latent_dim=32, num_classes=0, ndim=2,
                      g_features=(128, 64), d_features=(64, 128), kernel_size=4, g_norm="batch",
                      output="sigmoid", spectral_norm="none"), **model_fields)
  c.optim.name = "adam"
  if recipe == "r1":
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.5
    c.adversarial.d_learning_rate = 2e-4
    c.adversarial.r1_gamma = 0.1
  elif recipe == "hinge_sn":
    c.model.spectral_norm = "discriminator"
    c.optim.learning_rate = 1e-4
    c.optim.b1, c.optim.b2 = 0.0, 0.9
    c.adversarial.d_learning_rate = 4e-4
    c.adversarial.loss = "hinge"
  else:
    raise ValueError(f"recipe={recipe!r}; expected 'r1' or 'hinge_sn'")
  c.generative.reference = "runs/digits_cnn"
  c.train.steps = steps
  c.train.log_every = 500
  c.train.eval_every = 1000
  c.train.checkpoint_every = 2000
  return c


def mnist1d(recipe: str = "r1", steps: int = 6000, **model_fields):
  """A GAN config for MNIST-1D (4,000 training signals of length 40): 5 -> 10 -> 20 -> 40."""
  c = digits(recipe, steps, **model_fields)
  c.data.source = "mnist1d"
  c.data.normalize = "global"
  c.data.batch_size = 64
  c.data.eval_batch_size = 500
  c.model.data_shape = (40,)
  c.model.ndim = 1
  c.model.g_features = (128, 64, 32)
  c.model.d_features = (32, 64, 128)
  c.model.kernel_size = 5
  c.model.output = "linear"
  c.generative.reference = "runs/mnist1d_cnn"
  return c


def finish(c, name: str, arg: str | None):
  """Applies the experiment argument (`tiny`: narrow networks for 20 steps) and locks."""
  if arg == "tiny":
    c.model.g_features = tuple(8 for _ in c.model.g_features)
    c.model.d_features = tuple(8 for _ in c.model.d_features)
    c.generative.grid_samples = 20
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg(name, arg, ARGS)
  return config_lib.lock(c)
