"""A DCGAN on scikit-learn's digits (8x8), unconditional: the non-saturating loss with the R1
penalty. Sample grids go to WORKDIR/samples at every evaluation; the reference classifier is
digits_cnn.

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_dcgan.py --workdir runs/digits_dcgan
  python -m eval.generative --workdir runs/digits_dcgan
"""

from experiments.recipes import gan

ARGS = gan.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return gan.finish(gan.digits(), "digits_dcgan", arg)
