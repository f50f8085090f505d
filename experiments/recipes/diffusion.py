"""The shared recipe of the diffusion experiments (not an experiment itself).

Data are normalised with one global mean and standard deviation (train split). The denoiser is
`unet.UNet` predicting eps, on the cosine schedule with T = 1,000 steps and the simple loss;
AdamW 2e-4 (weight decay 0) with a 500-step warm-up and gradient clipping at 1, batch 64, 5,000
steps, and an average of the parameters (decay 0.999) that every sample comes from. Samples use
DDIM with 50 steps unless a command line changes `diffusion.sampler` / `diffusion.sample_steps`,
with x0 estimates bounded to the data's range (`diffusion.clip`) and DDIM's noise `diffusion.eta`
chosen per data set from {0, 0.25, 0.5, 0.75, 1} by the Frechet distance of seeds 10-12, which
the README's numbers (seeds 0-4) do not use (`python -m eval.generative --workdir DIR --seed 10
--seeds 3 --set diffusion.eta=E`): 0.5 on digits, 0.75 on MNIST-1D. Sample quality
is scored by `python -m eval.generative` in the features of `generative.reference`, trained
first, e.g.

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
"""

from train import config as config_lib

ARGS = ("tiny",)  # the experiment arguments (besides none)


def digits(steps: int = 5000, **model_fields):
  """A diffusion config for scikit-learn's digits (8x8): a two-level UNet (8x8, 4x4) of 32 and
  64 channels with self-attention at 4x4."""
  c = config_lib.base("diffusion")
  c.data.source = "digits"
  c.data.normalize = "global"
  c.data.batch_size = 64
  c.data.eval_batch_size = 360
  # every field spelled out, so any can be overridden from the command line
  c.model = dict(dict(name="unet.UNet", data_shape=(8, 8, 1), ndim=2, channels=32,
                      channel_mults=(1, 2), num_res_blocks=2, attention_levels=(1,), num_heads=4,
                      num_classes=0, dropout=0.0, groups=8), **model_fields)
  c.optim.name = "adamw"
  c.optim.learning_rate = 2e-4
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 500
  c.optim.clip_norm = 1.0
  # x0 estimates are bounded to the data's range: at the first, noisiest steps of the cosine
  # schedule, an eps error is magnified by 1 / sqrt(abar_T) (unbounded, the samples blow up)
  c.diffusion.clip = 2.0          # normalised digits span [-0.81, 1.85]
  c.diffusion.eta = 0.5           # DDIM-50, seeds 10-12: Frechet distance 3.95 at 0.5, 4.52 at 0
  c.generative.reference = "runs/digits_cnn"
  c.train.steps = steps
  c.train.log_every = 500
  c.train.eval_every = 2500
  c.train.checkpoint_every = 2500
  return c


def mnist1d(steps: int = 5000, **model_fields):
  """A diffusion config for MNIST-1D (length 40): a three-level 1-D UNet (40, 20, 10) of 32, 64,
  64 channels with self-attention at length 10."""
  c = digits(steps, **model_fields)
  c.data.source = "mnist1d"
  c.data.batch_size = 64
  c.data.eval_batch_size = 500
  c.model.data_shape = (40,)
  c.model.ndim = 1
  c.model.channel_mults = (1, 2, 2)
  c.model.attention_levels = (2,)
  c.diffusion.clip = 6.0          # normalised signals span [-5.49, 4.54]
  c.diffusion.eta = 0.75          # DDIM-50, seeds 10-12: 50.95 at 0.75, 52.27 at 1, 860.02 at 0
  c.generative.reference = "runs/mnist1d_cnn"
  return c


def finish(c, name: str, arg: str | None):
  """Applies the experiment argument (`tiny`: a narrow UNet for 20 steps, 10 sampling steps)
  and locks."""
  if arg == "tiny":
    c.model.channels = 8
    c.model.num_res_blocks = 1
    c.model.groups = 4
    c.diffusion.sample_steps = 5
    c.generative.grid_samples = 20
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg(name, arg, ARGS)
  return config_lib.lock(c)
