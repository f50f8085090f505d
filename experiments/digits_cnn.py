"""scikit-learn's 8x8 digits with a small 2-D CNN: two 3x3 conv layers (32, 64) with max
pooling, a 128-unit dense layer with dropout; per-channel normalisation, pad-and-crop
augmentation; Adam with cosine decay. Split: stratified 80/20 (1,437 / 360), fixed.

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_cnn.py:tiny
"""

from train import config as config_lib

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  c.data.source = "digits"
  c.data.batch_size = 64
  c.data.eval_batch_size = 360
  c.data.normalize = "global"
  c.data.augment.crop_padding = 1
  c.model = dict(name="cnn.CNN", num_classes=10, ndim=2, features=(32, 64), kernel_sizes=3,
                 strides=1, padding="SAME", pool="max", dense=(128,), dropout=0.3)
  c.optim.name = "adam"
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "cosine"
  c.train.steps = 3000
  c.train.log_every = 500
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1500
  if arg == "tiny":
    c.data.eval_batch_size = 120
    c.model.features = (4, 4)
    c.model.dense = (8,)
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg("digits_cnn", arg, ARGS)
  return config_lib.lock(c)
