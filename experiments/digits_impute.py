"""Imputation on scikit-learn's digits with a denoising autoencoder built for it: a dense
512-256 encoder and a 64-dimensional code (no bottleneck to speak of: the task is to fill in,
not to compress), trained to restore images with half their pixels set to 0, the per-pixel
training mean under per-pixel normalisation; AdamW with weight decay 0.2 (there are only 1,437
training images). `python -m eval.reconstruction --workdir runs/digits_impute` hides 25% of each
test image's pixels at random, or a 4x4 block, fills them in, and reports the error on the
hidden pixels beside the training mean and scikit-learn's 5-nearest-neighbour imputer.

  python -m train --config experiments/digits_impute.py --workdir runs/digits_impute
  python -m train --config experiments/digits_impute.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = autoencoder.denoising(0.5)
  c.model.encoder = "dense"
  c.model.features = (512, 256)
  c.model.latent_dim = 64
  c.optim.name = "adamw"
  c.optim.weight_decay = 0.2
  return autoencoder.finish(c, "digits_impute", arg)
