"""A class-conditional DCGAN on scikit-learn's digits: the generator takes a class embedding beside
z, the discriminator is a projection discriminator with spectral normalisation, trained with the
hinge loss and TTUR (Miyato & Koyama 2018). `eval.generative`
also reports how often the reference classifier labels a sample with the class it was asked for.

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_cgan.py --workdir runs/digits_cgan
  python -m eval.generative --workdir runs/digits_cgan
"""

from experiments.recipes import gan

ARGS = gan.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return gan.finish(gan.digits("hinge_sn", num_classes=10), "digits_cgan", arg)
