"""A convolutional autoencoder with an 8-dimensional code on scikit-learn's 8x8 digits, trained
on mean squared error of pixels scaled to [0, 1]. Its test MSE is compared with PCA's at 8
components (`python -m eval.reconstruction --workdir runs/digits_ae`).

  python -m train --config experiments/digits_ae.py --workdir runs/digits_ae
  python -m train --config experiments/digits_ae.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return autoencoder.finish(autoencoder.digits("Autoencoder", likelihood="gaussian"),
                             "digits_ae", arg)
