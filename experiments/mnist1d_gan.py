"""A 1-D DCGAN on MNIST-1D signals (length 40), unconditional, with the hinge loss, a spectrally
normalised discriminator and TTUR, for 12,000 steps; the reference classifier is mnist1d_cnn
(the paper's CNN).

  python -m train --config experiments/mnist1d_cnn.py --workdir runs/mnist1d_cnn
  python -m train --config experiments/mnist1d_gan.py --workdir runs/mnist1d_gan
  python -m eval.generative --workdir runs/mnist1d_gan
"""

from experiments.recipes import gan

ARGS = gan.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return gan.finish(gan.mnist1d("hinge_sn", steps=12000), "mnist1d_gan", arg)
