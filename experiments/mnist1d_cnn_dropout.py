"""The uncertainty study's classifier (issue "Trust in predictions"): the MNIST-1D paper's CNN
and recipe (`mnist1d_cnn`) with dropout 0.2 before the head, trained on digits 0-7 only, so the
test split's 8s and 9s are classes it never saw. Dropout makes MC dropout possible; five seeds
make the ensemble.

  python -m experiments.sweep --config experiments/mnist1d_cnn_dropout.py --seeds 5 \
      --workdir runs/mnist1d_cnn_dropout
  python -m eval.uncertainty --sweep runs/mnist1d_cnn_dropout --shifted mnist1d_drift

The dropout rate was not tuned.
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="cnn.CNN", num_classes=10, features=(25, 25, 25), kernel_sizes=(5, 3, 3),
               strides=2, padding=1, ndim=1, dropout=0.2)
  c = experiment("mnist1d_cnn_dropout", model, arg, tiny_model=dict(features=(4, 4, 4)))
  with c.unlocked():
    c.data.keep_classes = (0, 1, 2, 3, 4, 5, 6, 7)
  return c
