"""scikit-learn's breast-cancer table (30 features, binary) with an MLP: one hidden layer of 32
ReLU units with dropout, per-feature standardisation from the train split, balanced class
weights; Adam 1e-3. Split: stratified 80/20 (455 / 114), fixed.

  python -m train --config experiments/breast_cancer_mlp.py --workdir runs/breast_cancer_mlp
  python -m train --config experiments/breast_cancer_mlp.py:tiny
"""

from train import config as config_lib

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  c.data.source = "breast_cancer"
  c.data.batch_size = 32
  c.data.eval_batch_size = 114
  c.data.normalize = "per_feature"
  c.data.class_weights = "balanced"
  c.model = dict(name="mlp.MLP", num_classes=2, widths=(32,), dropout=0.2)
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.train.steps = 1500
  c.train.log_every = 250
  c.train.eval_every = 500
  c.train.checkpoint_every = 750
  if arg == "tiny":
    c.model.widths = (4,)
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg("breast_cancer_mlp", arg, ARGS)
  return config_lib.lock(c)
