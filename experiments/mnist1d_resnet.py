"""MNIST-1D with a small 1-D ResNet (beyond the paper's table): three stages of two basic blocks
(32, 64, 128 channels), BatchNorm, global average pooling; random shifts of up to 4 samples and
Gaussian noise; AdamW with warm-up and cosine decay.

  python -m train --config experiments/mnist1d_resnet.py --workdir runs/mnist1d_resnet
  python -m train --config experiments/mnist1d_resnet.py:tiny
"""

from train import config as config_lib

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  c.data.source = "mnist1d"
  c.data.batch_size = 100
  c.data.augment.shift = 4
  c.data.augment.noise_std = 0.05
  c.model = dict(name="cnn.ResNet", num_classes=10, ndim=1, stage_sizes=(2, 2, 2),
                 widths=(32, 64, 128), kernel_size=3, stem="cifar")
  c.optim.name = "adamw"
  c.optim.learning_rate = 3e-3
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 5e-4
  c.train.steps = 6000
  c.train.log_every = 500
  c.train.eval_every = 1000
  c.train.checkpoint_every = 2000
  if arg == "tiny":
    c.data.eval_batch_size = 100
    c.model.stage_sizes = (1, 1)
    c.model.widths = (4, 8)
    c.optim.warmup_steps = 5
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg("mnist1d_resnet", arg, ARGS)
  return config_lib.lock(c)
