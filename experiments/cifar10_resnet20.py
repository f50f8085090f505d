"""CIFAR-10 with ResNet-20, He et al. 2016 (Deep Residual Learning, section 4.2): SGD with
momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k of 64k iterations, batch 128,
weight decay 1e-4 (L2, not on BatchNorm scales or biases), 4-pixel pad-and-crop and flips,
per-channel normalisation, option-A (parameter-free) shortcuts. The paper reports 8.75% test
error (91.25% accuracy) for ResNet-20, trained on 45k images with 5k held out; this trains on all
50k. `:projection` uses projection shortcuts (option B) instead. Every difference from the paper
is in docs/recipes.md.

CIFAR-10 (TFDS `cifar10`, 60,000 32x32 PNGs, 180 MB decoded) is held in memory by the automatic
choice; `--config.data.in_memory=False` streams it. Prepare it once where the network is
reachable (see docs/data.md), then:

  python -m train --config experiments/cifar10_resnet20.py --workdir runs/cifar10_resnet20
  python -m train --config experiments/cifar10_resnet20.py:tiny   # smoke run (any cifar10)
  python -m train --config experiments/cifar10_resnet20.py:projection
"""

from train import config as config_lib

ARGS = ("tiny", "projection")  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  c.data.source = "cifar10"
  c.data.batch_size = 128
  c.data.eval_batch_size = 1000
  c.data.normalize = "per_channel"
  c.data.augment.crop_padding = 4
  c.data.augment.flip = True
  c.model = dict(name="cnn.ResNet20", num_classes=10)
  c.optim.name = "momentum"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "step"
  c.optim.step_boundaries = (0.5, 0.75)
  c.optim.step_factor = 0.1
  c.train.steps = 64_000
  c.train.log_every = 500
  c.train.eval_every = 4000
  c.train.checkpoint_every = 4000
  if arg == "projection":
    c.model.shortcut = "projection"
  elif arg == "tiny":
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.model = dict(name="cnn.ResNetTiny", num_classes=10)
    config_lib.tiny(c, steps=4)
  elif arg:
    raise config_lib.unknown_arg("cifar10_resnet20", arg, ARGS)
  return config_lib.lock(c)
