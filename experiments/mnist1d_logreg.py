"""MNIST-1D, the paper's logistic regression: one linear layer on the 40 raw samples; Adam 1e-2,
batch 100, 8,000 steps. Paper: 32% test accuracy.

  python -m train --config experiments/mnist1d_logreg.py --workdir runs/mnist1d_logreg
  python -m train --config experiments/mnist1d_logreg.py:tiny
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  return experiment("mnist1d_logreg", dict(name="mlp.MLP", num_classes=10, widths=()), arg)
