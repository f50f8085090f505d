"""MNIST-1D, the paper's MLP: two hidden layers of 100 ReLU units with a skip around the second
(the mnist1d package's MLPBase: h = relu(W1 x); h = h + relu(W2 h); W3 h); Adam 1e-2, batch 100,
8,000 steps. Paper: 68% test accuracy.

  python -m train --config experiments/mnist1d_mlp.py --workdir runs/mnist1d_mlp
  python -m train --config experiments/mnist1d_mlp.py:tiny
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="mlp.MLP", num_classes=10, widths=(100, 100), activation="relu",
               residual=True)
  return experiment("mnist1d_mlp", model, arg, tiny_model=dict(widths=(8, 8)))
