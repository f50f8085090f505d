"""A convolutional autoencoder with an 8-dimensional code on scikit-learn's 8x8 digits, trained
on mean squared error of pixels scaled to [0, 1]. Its test MSE is compared with PCA's at 8
components (`python -m eval.reconstruction --workdir runs/digits_ae`).

  python -m train --config experiments/digits_ae.py --workdir runs/digits_ae
  python -m train --config experiments/digits_ae.py:tiny
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import _autoencoder  # noqa: E402


def get_config(arg: str | None = None):
  return _autoencoder.finish(_autoencoder.digits("Autoencoder", likelihood="gaussian"),
                             "digits_ae", arg)
