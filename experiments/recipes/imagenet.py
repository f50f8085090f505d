"""The ImageNet (ILSVRC-2012, TFDS `imagenet2012`) data section shared by the ImageNet recipes:
streamed from disk (variable-sized JPEGs), decoded and cropped in worker processes."""

from __future__ import annotations

import ml_collections as mlc

TRAIN_IMAGES = 1_281_167


def data(c: mlc.ConfigDict, eval_ops: tuple[str, ...]) -> None:
  """Batch 1024, Inception crops to 224 with flips for training, `eval_ops` for evaluation on
  the validation split, 16 worker processes."""
  c.data.source = "imagenet2012"
  c.data.eval_split = "validation"
  c.data.batch_size = 1024
  # The training batch: it divides every power-of-two slice up to 1,024 chips (1,000 did not
  # divide a v5e-16); the 50,000 validation images end in a batch padded with mask 0.
  c.data.eval_batch_size = 1024
  c.data.workers = 16
  c.data.prefetch = 4
  c.data.image.train = ("decode", "random_resized_crop", "flip", "normalize")
  c.data.image.eval = eval_ops
  c.data.image.size = 224


def tiny(c: mlc.ConfigDict) -> None:
  """The smoke-run data: batches of 4 images cropped to 32 px, made in this process."""
  c.data.batch_size = 4
  c.data.eval_batch_size = 4
  c.data.workers = 0
  c.data.prefetch = 0
  c.data.image.size = 32
  c.optim.warmup_steps = 2
  c.train.precision = "float32"
