"""Per-example image preprocessing declared in `config.data.image`: op names in order, their
parameters as typed fields.

    c.data.image.train = ("decode", "random_resized_crop", "flip", "normalize")
    c.data.image.eval = ("decode", "resize_small", "central_crop", "normalize")
    c.data.image.size = 224

`Preprocess(ops, image_config, feature)` is a picklable callable `(example, rng) -> array`, run
by the pipeline on each example of a batch (in the worker processes when streaming), before the
batch is stacked: decoded images may differ in size, the ops bring them to one. Ops are in
`data/image_ops.py` and `data/randaugment.py`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import ml_collections as mlc
import numpy as np

from data import image_ops, randaugment

OPS = ("decode", "resize", "resize_small", "random_resized_crop", "central_crop",
       "central_crop_fraction", "flip", "randaugment", "normalize")
RANDOM_OPS = ("random_resized_crop", "flip", "randaugment")


def defaults() -> mlc.ConfigDict:
  """The `config.data.image` section: no ops, and the parameters' defaults."""
  c = mlc.ConfigDict()
  c.train = ()                           # e.g. ("decode", "random_resized_crop", "flip",
  c.eval = ()                            #       "normalize")
  c.size = 0                             # output side in pixels
  c.crop_scale = (0.08, 1.0)             # random_resized_crop: area fraction
  c.crop_ratio = (3 / 4, 4 / 3)          # random_resized_crop: aspect ratio
  c.central_fraction = 0.875             # central_crop_fraction; resize_small's default
  c.resize_small = 0                     # shorter side; 0 = size / central_fraction
  c.resize_method = "bilinear"           # bilinear|bicubic: every op that resizes
  c.mean = ()                            # normalize, per channel; () = ImageNet's
  c.std = ()
  # Training batches leave the pipeline as uint8 pixels, and the supervised step applies the
  # last op, "normalize", on the device: a quarter of the bytes written, in the worker
  # processes' fresh batch memory, and sent (docs/input_pipeline.md). Evaluation batches stay
  # float.
  c.normalize_on_device = False
  c.randaug_layers = 2                   # randaugment: ops per image (N)
  c.randaug_magnitude = 10.0             # randaugment: strength 0..10 (M)
  return c


def check(image_config: Any, field: str = "data.image") -> None:
  """Raises ValueError naming the first unknown op or bad parameter of `image_config`."""
  for split in ("train", "eval"):
    ops = tuple(image_config[split])
    for op in ops:
      if op not in OPS:
        raise ValueError(f"{field}.{split} has op {op!r}; expected ops from {OPS}")
    if "decode" in ops and ops.index("decode") != 0:
      raise ValueError(f"{field}.{split}={ops}: 'decode' must come first")
    if split == "eval" and set(ops) & set(RANDOM_OPS):
      raise ValueError(f"{field}.eval={ops} has a random op "
                       f"{sorted(set(ops) & set(RANDOM_OPS))[0]!r}; evaluation is deterministic")
  sizeless = {"decode", "flip", "randaugment", "normalize"}
  if image_config.size <= 0 and any(set(image_config[s]) - sizeless for s in ("train", "eval")):
    raise ValueError(f"{field}.size={image_config.size}; expected the output side in pixels > 0")
  lo, hi = tuple(image_config.crop_scale)
  if not 0 < lo <= hi <= 1:
    raise ValueError(f"{field}.crop_scale={(lo, hi)}; expected 0 < min <= max <= 1")
  lo, hi = tuple(image_config.crop_ratio)
  if not 0 < lo <= hi:
    raise ValueError(f"{field}.crop_ratio={(lo, hi)}; expected 0 < min <= max")
  if image_config.resize_method not in image_ops.METHODS:
    raise ValueError(f"{field}.resize_method={image_config.resize_method!r}; expected one of "
                     f"{list(image_ops.METHODS)}")
  if not 0 < image_config.central_fraction <= 1:
    raise ValueError(f"{field}.central_fraction={image_config.central_fraction}; expected a "
                     "fraction in (0, 1]")
  if not (isinstance(image_config.randaug_layers, int) and image_config.randaug_layers >= 0):
    raise ValueError(f"{field}.randaug_layers={image_config.randaug_layers!r}; expected an "
                     "integer >= 0")
  if not 0 <= image_config.randaug_magnitude <= randaugment.MAX_LEVEL:
    raise ValueError(f"{field}.randaug_magnitude={image_config.randaug_magnitude}; expected a "
                     f"value in [0, {randaugment.MAX_LEVEL:g}]")
  train = tuple(image_config.train)
  if image_config.normalize_on_device and train[-1:] != ("normalize",):
    raise ValueError(f"{field}.normalize_on_device=True with {field}.train={train}; expected "
                     "'normalize' as the last op, the one the step applies")
  if len(image_config.mean) != len(image_config.std) or min(image_config.std, default=1) <= 0:
    raise ValueError(f"{field}.mean={tuple(image_config.mean)} and .std="
                     f"{tuple(image_config.std)}; expected one value per channel, std > 0")


class Preprocess:
  """`ops` applied in order to one example (see module docstring).

  Args:
    ops: op names from `OPS`.
    image_config: `config.data.image` (size, crop_scale, crop_ratio, central_fraction,
      resize_small, mean, std).
    feature: the TFDS feature of the stored input (its `decode_example_np` is `decode`); None
      when inputs arrive decoded.
  """

  def __init__(self, ops: tuple[str, ...], image_config: Any, feature: Any = None):
    self.ops = tuple(ops)
    c = image_config
    uses = set(self.ops).__contains__
    # Each parameter is read only when an op uses it, so that `train.field_use` sees a parameter
    # set for an op the experiment does not run.
    sized = set(self.ops) - {"decode", "flip", "randaugment", "normalize"}
    self.size = int(c.size) if sized else 0
    self.scale = tuple(float(v) for v in c.crop_scale) if uses("random_resized_crop") else ()
    self.ratio = tuple(float(v) for v in c.crop_ratio) if uses("random_resized_crop") else ()
    small = uses("resize_small") and int(c.resize_small)
    self.fraction = (float(c.central_fraction)
                     if uses("central_crop_fraction") or (uses("resize_small") and not small)
                     else 0.875)
    self.small = small or (int(round(self.size / self.fraction)) if self.size else 0)
    self.method = str(c.resize_method) if sized - {"central_crop"} else "bilinear"
    self.mean, self.std = (_mean_std(c) if uses("normalize") else
                           (image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD))
    self.feature = feature
    self.randaug = ((int(c.randaug_layers), float(c.randaug_magnitude)) if uses("randaugment")
                    else (0, 0.0))

  pixels = False  # True: uint8 pixels out, "normalize" left to the step (`on_device`)

  def on_device(self) -> "Preprocess":
    """These ops without their last, "normalize", which the step applies to the uint8 pixels
    instead (`device_normalizer`)."""
    if self.ops[-1:] != ("normalize",):
      raise ValueError(f"normalising on the device needs 'normalize' last; ops {self.ops}")
    host = copy.copy(self)
    host.ops, host.pixels = self.ops[:-1], True
    return host

  @property
  def random(self) -> bool:
    return bool(set(self.ops) & set(RANDOM_OPS))

  def __call__(self, example: Any, rng: np.random.Generator | None,
               out: np.ndarray | None = None) -> np.ndarray:
    """The prepared example; written into `out` (its slot in the batch) when given."""
    x = example
    fused = False  # a flip done inside the crop before it
    for i, op in enumerate(self.ops):
      if fused:
        fused = False
        continue
      if op == "decode":
        if isinstance(x, (bytes, np.bytes_)):
          x = image_ops.decode(bytes(x), self.feature)
        x = np.asarray(x)
      elif op == "resize":
        x = image_ops.resize(x, self.size, self.method)
      elif op == "resize_small":
        x = image_ops.resize_small(x, self.small, self.method)
      elif op == "random_resized_crop":
        fused = self.ops[i + 1:i + 2] == ("flip",)
        x = image_ops.random_resized_crop(x, rng, self.size, self.scale, self.ratio, fused,
                                          self.method)
      elif op == "central_crop":
        x = image_ops.central_crop(x, self.size)
      elif op == "central_crop_fraction":
        x = image_ops.central_crop_fraction(x, self.size, self.fraction, self.method)
      elif op == "flip":
        x = image_ops.flip(x, rng)
      elif op == "randaugment":
        x = randaugment.randaugment(x, rng, *self.randaug)
      elif op == "normalize":
        last = i == len(self.ops) - 1
        x = image_ops.normalize(x, self.mean, self.std, out if last else None)
        if last and out is not None:
          return out
    if out is not None:
      out[...] = x
      return out
    return np.ascontiguousarray(x)


def for_split(ops: tuple[str, ...], image_config: Any, train: bool,
              feature: Callable[[], Any]) -> Preprocess | None:
  """A split's `Preprocess` of `ops` (None without ops; `feature()`, the stored input's TFDS
  feature, is asked for only then): for training with `normalize_on_device`, without its last
  op, so that batches leave as uint8 pixels for the supervised step to normalise."""
  if not ops:
    return None
  prepare = Preprocess(ops, image_config, feature())
  return prepare.on_device() if train and image_config.normalize_on_device else prepare


def _mean_std(image_config: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The "normalize" op's per-channel (mean, std): `image_config`'s, or ImageNet's."""
  return (tuple(float(v) for v in image_config.mean) or image_ops.IMAGENET_MEAN,
          tuple(float(v) for v in image_config.std) or image_ops.IMAGENET_STD)


def device_normalizer(image_config: Any, dtype: Any = np.float32) -> Callable[[Any], Any]:
  """The step's side of `normalize_on_device`: a function of a batch's inputs that maps uint8
  pixels (B, H, W, C) to (x - mean) / std in float32, then `dtype` (`data.dtype`), as the
  "normalize" op and the pipeline's cast would have, and leaves any other dtype as it is (the
  evaluation's float batches). Without `normalize_on_device`, the identity."""
  import jax.numpy as jnp

  if not image_config.normalize_on_device:
    return lambda x: x
  mean, std = _mean_std(image_config)
  inv_std = (1.0 / np.asarray(std, np.float64)).astype(np.float32)

  def normalize(x):
    if x.dtype != jnp.uint8:
      return x
    if x.shape[-1] != len(mean):
      raise ValueError(f"data.image.mean={mean} / std={std} for images with {x.shape[-1]} "
                       "channels; expected one value per channel")
    y = (x.astype(jnp.float32) - np.asarray(mean, np.float32)) * inv_std
    return y.astype(dtype)
  return normalize
