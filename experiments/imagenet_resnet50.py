"""ImageNet (ILSVRC-2012) with ResNet-50, the recipe of the flax ImageNet example
(`examples/imagenet/configs/tpu.py`): batch 1024, Nesterov momentum 0.9, learning rate
0.1 x 1024 / 256 = 0.4 with 5 warm-up epochs then cosine decay over 100 epochs, weight decay 1e-4
(L2, not on BatchNorm scales or biases), bfloat16 compute. Training images: Inception crop to 224,
flip, ImageNet mean/std; evaluation: the central 87.5% square, resized to 224; bicubic resizing
as the example's `_resize` (each difference from the example is in docs/recipes.md). The example's
README reports 76.3-76.5% top-1 on the validation split (TPU v3-32 to 8 x V100, about 100
epochs); this recipe is expected to reach that on comparable hardware, and has not been run here
(2 CPU cores).

ImageNet needs `manual_dir` (docs/data.md); its JPEGs vary in size, so the automatic choice
streams it from disk, with `data.workers` processes decoding and cropping:

  python -m train --config experiments/imagenet_resnet50.py --workdir runs/imagenet_resnet50 \
      --config.data.workers=32
  python -m train --config experiments/imagenet_resnet50.py:tiny   # smoke run
"""

from experiments.recipes import imagenet
from train import config as config_lib

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  imagenet.data(c, eval_ops=("decode", "central_crop_fraction", "normalize"))
  c.data.image.resize_method = "bicubic"  # input_pipeline._resize: tf.image.resize, BICUBIC
  c.model = dict(name="cnn.ResNet50", num_classes=1000)
  c.optim.name = "nesterov"
  c.optim.learning_rate = 0.1 * c.data.batch_size / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "warmup_cosine"
  steps_per_epoch = imagenet.TRAIN_IMAGES // c.data.batch_size
  c.optim.warmup_steps = 5 * steps_per_epoch
  c.train.steps = 100 * steps_per_epoch
  c.train.precision = "bfloat16"
  c.data.dtype = "bfloat16"  # input_pipeline.create_split(dtype=tf.bfloat16) under half precision
  c.train.log_norms = False  # train.py's train_step records the loss and accuracy alone
  c.train.log_every = 100
  c.train.eval_every = 5 * steps_per_epoch
  c.train.checkpoint_every = steps_per_epoch
  if arg == "tiny":
    imagenet.tiny(c)
    c.model = dict(name="cnn.ResNet", num_classes=1000, stage_sizes=(1, 1), widths=(4, 8),
                   stem="imagenet", block="bottleneck")
    config_lib.tiny(c, steps=4)
  elif arg:
    raise config_lib.unknown_arg("imagenet_resnet50", arg, ARGS)
  return config_lib.lock(c)
