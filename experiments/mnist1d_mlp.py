"""MNIST-1D, the paper's MLP: two hidden layers of 100 ReLU units; Adam 1e-2, batch 100,
8,000 steps. Paper: 68% test accuracy.

  python -m train --config experiments/mnist1d_mlp.py --workdir runs/mnist1d_mlp
  python -m train --config experiments/mnist1d_mlp.py:tiny
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _mnist1d_paper import recipe  # noqa: E402

from train import config as config_lib  # noqa: E402


def get_config(arg: str | None = None):
  c = recipe(dict(name="mlp.MLP", num_classes=10, widths=(100, 100), activation="relu"))
  c.data.eval_batch_size = 500
  if arg == "tiny":
    c.data.eval_batch_size = 100
    c.model.widths = (8,)
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg("mnist1d_mlp", arg)
  return config_lib.lock(c)
