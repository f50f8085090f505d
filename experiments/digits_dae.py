"""A denoising convolutional autoencoder on scikit-learn's digits (Vincent et al. 2008): in
training, a quarter of the pixels of each input are set to 0 (the training mean of that pixel,
under per-pixel normalisation) and the model reconstructs the clean image. The same model
imputes missing pixels: `python -m eval.reconstruction --workdir runs/digits_dae`.

  python -m train --config experiments/digits_dae.py --workdir runs/digits_dae
  python -m train --config experiments/digits_dae.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return autoencoder.finish(autoencoder.denoising(0.25), "digits_dae", arg)
