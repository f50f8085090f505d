"""`shapes` (generated JPEGs of 10 shapes x textures, `data/shapes.py`) with a small ResNet,
streamed from disk: Inception crops of the 64 px images to 56 with flips for training, the
central 87.5% for evaluation, decoded in 2 worker processes, training batches as uint8 pixels
that the step normalises. The build's size is a builder argument, so the same command trains
on 10,000 images or on a build larger than memory:

  python -m train --config experiments/shapes_resnet.py --workdir runs/shapes_resnet
  python -m train --config experiments/shapes_resnet.py \
      --config.data.builder_config.num_examples=1000000 --workdir runs/shapes_1m
  python -m train --config experiments/shapes_resnet.py:tiny
"""

from train import config as config_lib

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  c.data.source = "shapes"
  c.data.builder_config.num_examples = 10_000
  c.data.builder_config.image_size = 64  # the builder's default; larger builds pass more
  c.data.in_memory = "false"
  c.data.workers = 2
  c.data.prefetch = 2
  c.data.batch_size = 128
  c.data.eval_batch_size = 500
  c.data.image.train = ("decode", "random_resized_crop", "flip", "normalize")
  c.data.image.eval = ("decode", "central_crop_fraction", "normalize")
  c.data.image.size = 56
  # uint8 crops from the workers, normalised in the step: the pipeline's images/s doubles
  # (docs/input_pipeline.md)
  c.data.image.normalize_on_device = True
  c.data.image.crop_scale = (0.25, 1.0)  # the shapes fill 20-60% of the side
  c.model = dict(name="cnn.ResNet", num_classes=10, stage_sizes=(1, 1, 1), widths=(16, 32, 64))
  c.optim.name = "momentum"
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 100
  c.train.steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 500
  # the run 7% faster (train/huge_pages.py; docs/speed_attempts.md item 11)
  c.train.huge_pages = True
  if arg == "tiny":
    c.data.builder_config.num_examples = 40
    c.data.builder_config.image_size = 32
    c.data.workers = 0
    c.data.prefetch = 0
    c.data.batch_size = 8
    c.data.eval_batch_size = 50
    c.data.image.size = 24
    c.model.widths = (4, 8, 8)
    c.optim.warmup_steps = 2
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg("shapes_resnet", arg, ARGS)
  return config_lib.lock(c)
