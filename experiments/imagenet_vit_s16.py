"""ImageNet (ILSVRC-2012) with ViT-S/16, the recipe of big_vision's `vit_s16_i1k.py` (Beyer et
al. 2022, "Better plain ViT baselines for ImageNet-1k"): batch 1024 for 90 epochs, Adam
(b1 0.9, b2 0.999, first moment in bfloat16) at 1e-3 with 10,000 linear warm-up steps then cosine
decay, decoupled weight decay of kernels at 1e-4 x the schedule (big_vision's `wd`, not scaled by
the rate: adamw's 0.1), gradient clipping at norm 1, mixup (Beta 0.2) on the device; training on
train[:99%] with Inception crops (5-100% of the area, aspect 0.75-1.33) to 224, flips and
RandAugment(2, 10), evaluation on the validation split resized to 256 on the shorter side and
centrally cropped to 224; pixels scaled to [-1, 1]; the model with 2-D sin-cos positions, mean
pooling, a tanh pre-logits layer, a zero-initialised head and Xavier-uniform attention and MLP
kernels. big_vision reports 76.5% top-1 after 90 epochs (6-7 h on a TPU v3-8, its docstring).
Differences, each in docs/recipes.md: RandAugment's contrast op blends towards the mean grey
level (data/randaugment.py), PIL's antialiased resizing stands in for TF's, and the data are
streamed rather than cached in memory. Not run here (2 CPU cores).

  python -m train --config experiments/imagenet_vit_s16.py --workdir runs/imagenet_vit_s16
  python -m train --config experiments/imagenet_vit_s16.py:tiny   # smoke run
"""

from experiments.recipes import imagenet
from train import config as config_lib

TRAIN_IMAGES = 1_268_355  # train[:99%] of 1,281,167

ARGS = ("tiny",)  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = config_lib.base()
  imagenet.data(c, eval_ops=("decode", "resize_small", "central_crop", "normalize"))
  c.data.image.train = ("decode", "random_resized_crop", "flip", "randaugment", "normalize")
  c.data.image.randaug_layers, c.data.image.randaug_magnitude = 2, 10.0
  c.data.image.crop_scale = (0.05, 1.0)  # big_vision's inception_crop area_min=5, area_max=100
  c.data.image.crop_ratio = (0.75, 1.33)
  c.data.train_split = "train[:99%]"
  c.data.image.resize_small = 256
  c.data.image.mean = (127.5, 127.5, 127.5)  # big_vision's value_range(-1, 1)
  c.data.image.std = (127.5, 127.5, 127.5)
  # attention logits and softmax in bfloat16, as flax's attention computes them in big_vision's
  # `dtype_mm` (docs/recipes.md)
  c.model = dict(name="transformer.ViTS16", num_classes=1000, attention_logits="compute")
  c.supervised.mixup = 0.2
  c.optim.name = "adamw"
  c.optim.learning_rate = 1e-3
  # big_vision adds wd * schedule * params to the update, not scaled by the peak learning rate;
  # optax's (and our) adamw multiplies its decay by the learning rate: 1e-4 / 1e-3 = 0.1.
  c.optim.weight_decay = 0.1
  c.optim.clip_norm = 1.0
  c.optim.mu_dtype = "bfloat16"  # big_vision's optax=dict(mu_dtype='bfloat16')
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 10_000
  c.train.steps = 90 * TRAIN_IMAGES // c.data.batch_size
  c.train.precision = "bfloat16"
  c.train.log_every = 100
  c.train.eval_every = 2500
  c.train.checkpoint_every = 1000
  if arg == "tiny":
    imagenet.tiny(c)
    c.data.image.resize_small = 36
    c.model = dict(name="transformer.TransformerClassifier", num_classes=1000, width=16,
                   depth=1, num_heads=2, mlp_dim=32, patch_size=8, pool="mean", max_len=16,
                   positions="sincos2d", pre_logits=16, head_zero_init=True,
                   attention_logits="compute")
    config_lib.tiny(c, steps=4)
  elif arg:
    raise config_lib.unknown_arg("imagenet_vit_s16", arg, ARGS)
  return config_lib.lock(c)
