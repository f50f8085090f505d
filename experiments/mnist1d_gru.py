"""MNIST-1D, the paper's GRU: one bidirectional GRU layer of 6 units read over the 40 steps, all
steps' outputs flattened into a linear head (5,134 parameters: PyTorch's GRU, six biases per
direction); Adam 1e-2, batch 100, 8,000 steps, PyTorch's initialisation. Paper: 91% test accuracy.

  python -m train --config experiments/mnist1d_gru.py --workdir runs/mnist1d_gru
  python -m train --config experiments/mnist1d_gru.py:tiny
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="recurrent.RecurrentNet", num_classes=10, hidden=(6,), cell="gru",
               bidirectional=True, head="flatten")
  return experiment("mnist1d_gru", model, arg, tiny_model=dict(hidden=(2,)))
