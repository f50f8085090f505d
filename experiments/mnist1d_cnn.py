"""MNIST-1D, the paper's CNN (Greydanus 2020): three stride-2 1-D convolutions of 25 channels
and a linear head; Adam 1e-2, batch 100, 8,000 steps, no augmentation. Paper: 94% test accuracy.

  python -m train --config experiments/mnist1d_cnn.py --workdir runs/mnist1d_cnn
  python -m train --config experiments/mnist1d_cnn.py:tiny     # smoke run, seconds
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="cnn.CNN", num_classes=10, features=(25, 25, 25), kernel_sizes=(5, 3, 3),
               strides=2, padding=1, ndim=1)
  return experiment("mnist1d_cnn", model, arg, tiny_model=dict(features=(4, 4, 4)))
