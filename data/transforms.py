"""Batch-level grain transforms, declared in `config.data` and applied in this order:

  crop (images) -> flip (images) -> shift (1-D) -> normalise -> binarise -> noise -> cast

They act on a whole batch dict `{"inputs": (B, ...), "label": (B,), "mask": (B,)}` with vectorised
numpy, so a batch costs microseconds, not a Python call per example. Random transforms are
`grain.transforms.RandomMap`s: grain seeds their generator from the pipeline seed and the batch
index, so a resumed run draws the same augmentation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import grain
import ml_collections as mlc
import ml_dtypes
import numpy as np

Batch = dict[str, np.ndarray]

NORMALIZATIONS = ("none", "global", "per_channel", "per_feature", "unit")
# `data.dtype`: the floating inputs' dtype as batches leave the pipeline
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


@dataclasses.dataclass(frozen=True)
class Statistics:
  """Mean and standard deviation that broadcast against one example (units of the inputs); for
  `unit` scaling, the training minimum and range."""

  mean: np.ndarray
  std: np.ndarray


def compute_statistics(inputs: np.ndarray, mode: str) -> Statistics:
  """Statistics of the training inputs (N, ...) for `Normalize`.

  Args:
    inputs: training inputs, first axis the examples.
    mode: `global` (one scalar), `per_channel` (last axis), `per_feature` (every element), or
      `unit`: one minimum and range, so training inputs span [0, 1] (digits' 0..16 -> x / 16).
  """
  x = inputs.astype(np.float64)
  if mode == "unit":
    lo, hi = x.min(), x.max()
    shape = (1,) * (x.ndim - 1)
    return Statistics(mean=np.full(shape, lo, np.float32),
                      std=np.full(shape, hi - lo if hi > lo else 1.0, np.float32))
  if mode == "global":
    axes = tuple(range(x.ndim))
  elif mode == "per_channel":
    axes = tuple(range(x.ndim - 1))
  elif mode == "per_feature":
    axes = (0,)
  else:
    raise ValueError(f"data.normalize={mode!r}; expected one of {NORMALIZATIONS}")
  mean = x.mean(axis=axes, keepdims=True)[0]
  std = x.std(axis=axes, keepdims=True)[0]
  std = np.where(std < 1e-8, 1.0, std)  # constant features (digits' border pixels) stay finite
  return Statistics(mean=mean.astype(np.float32), std=std.astype(np.float32))


def compute_statistics_chunked(chunks: Iterable[np.ndarray], mode: str) -> Statistics:
  """`compute_statistics` over a split read in chunks (N_i, ...), holding one chunk at a time.

  Means and variances merge chunk by chunk in float64 (Chan et al.'s pairwise update), so they
  agree with the whole-array computation to float64 rounding.
  """
  if mode not in NORMALIZATIONS[1:]:
    raise ValueError(f"data.normalize={mode!r}; expected one of {NORMALIZATIONS}")
  count, mean, m2, lo, hi, ndim = 0, None, None, np.inf, -np.inf, None
  for chunk in chunks:
    x = np.asarray(chunk, np.float64)
    ndim = x.ndim
    if mode == "unit":
      lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
      continue
    axes = {"global": tuple(range(x.ndim)), "per_channel": tuple(range(x.ndim - 1)),
            "per_feature": (0,)}[mode]
    k = int(np.prod([x.shape[a] for a in axes]))
    c_mean = x.mean(axis=axes, keepdims=True)[0]
    c_m2 = ((x - c_mean) ** 2).sum(axis=axes, keepdims=True)[0]
    if mean is None:
      count, mean, m2 = k, c_mean, c_m2
    else:
      delta, total = c_mean - mean, count + k
      mean = mean + delta * (k / total)
      m2 = m2 + c_m2 + delta ** 2 * (count * k / total)
      count = total
  if ndim is None:
    raise ValueError("normalisation statistics of an empty training split")
  if mode == "unit":
    shape = (1,) * (ndim - 1)
    return Statistics(mean=np.full(shape, lo, np.float32),
                      std=np.full(shape, hi - lo if hi > lo else 1.0, np.float32))
  std = np.sqrt(m2 / count)
  std = np.where(std < 1e-8, 1.0, std)
  return Statistics(mean=mean.astype(np.float32), std=std.astype(np.float32))


def normalize(x: np.ndarray, stats: Statistics | None) -> np.ndarray:
  """(x - mean) / std in float32; x as float32 when there are no statistics (x itself, not a
  copy, when it is float32 already)."""
  x = np.asarray(x).astype(np.float32, copy=False)
  return x if stats is None else (x - stats.mean) / stats.std


def denormalize(x: np.ndarray, stats: Statistics | None) -> np.ndarray:
  """The inverse of `normalize`: normalised inputs back to the stored data's units."""
  x = np.asarray(x).astype(np.float32)
  return x if stats is None else x * stats.std + stats.mean


class Normalize(grain.transforms.Map):
  """(x - mean) / std with training-split statistics; casts inputs to float32."""

  def __init__(self, stats: Statistics | None):
    self.stats = stats

  def map(self, batch: Batch) -> Batch:
    return {**batch, "inputs": normalize(batch["inputs"], self.stats)}


class Binarize(grain.transforms.Map):
  """x >= 0.5 -> 1, else 0 (float32): fixed binary data for a Bernoulli likelihood, after
  `normalize="unit"`."""

  def map(self, batch: Batch) -> Batch:
    return {**batch, "inputs": (batch["inputs"] >= 0.5).astype(np.float32)}


class CastInputs(grain.transforms.Map):
  """Floating inputs cast to `dtype` (`data.dtype`), last, as the batch leaves the pipeline;
  integer inputs (pixels not yet normalised, token ids) are left as they are. Under
  `train.precision="bfloat16"` the step casts its inputs down first thing, and numpy's
  (ml_dtypes') cast rounds to nearest even as XLA's does, so the step computes the same; half
  the bytes cross to the devices and sit in HBM (flax's ImageNet `input_pipeline` casts to
  bfloat16 under half precision for that). A step that computes on its inputs in float32
  first (mixup's blend) sees them rounded."""

  def __init__(self, dtype: str):
    self.dtype = DTYPES[dtype]

  def map(self, batch: Batch) -> Batch:
    x = batch["inputs"]
    return {**batch, "inputs": x.astype(self.dtype) if np.issubdtype(x.dtype, np.floating) or
            x.dtype == ml_dtypes.bfloat16 else x}


class RandomShift1D(grain.transforms.RandomMap):
  """Translates each 1-D signal (B, L) or (B, L, C) by an integer in [-max_shift, max_shift].

  Vacated positions are filled with zeros (the signals' resting value).
  """

  def __init__(self, max_shift: int):
    self.max_shift = int(max_shift)

  def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
    x = batch["inputs"]
    b, length = x.shape[0], x.shape[1]
    s = self.max_shift
    shifts = rng.integers(-s, s + 1, size=b)
    pad = [(0, 0), (s, s)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, pad)
    # output position j reads padded position j + s - shift.
    idx = np.arange(length)[None, :] + (s - shifts)[:, None]
    out = np.take_along_axis(padded, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
    return {**batch, "inputs": out}


class GaussianNoise(grain.transforms.RandomMap):
  """Adds N(0, std^2) noise to float inputs (applied after normalisation)."""

  def __init__(self, std: float):
    self.std = float(std)

  def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
    x = batch["inputs"]
    noise = rng.standard_normal(size=x.shape).astype(x.dtype)
    return {**batch, "inputs": x + self.std * noise}


class RandomCrop(grain.transforms.RandomMap):
  """Pads images (B, H, W, C) by `padding` zeros on each side and crops back to (H, W) at a
  random offset per image (the CIFAR recipe)."""

  def __init__(self, padding: int):
    self.padding = int(padding)

  def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
    x = batch["inputs"]
    if x.ndim != 4:
      raise ValueError(f"data.augment.crop_padding needs images (B, H, W, C); got inputs of "
                       f"shape {x.shape}")
    b, h, w, _ = x.shape
    p = self.padding
    padded = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    dy = rng.integers(0, 2 * p + 1, size=b)
    dx = rng.integers(0, 2 * p + 1, size=b)
    rows = (np.arange(h)[None, :] + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (np.arange(w)[None, :] + dx[:, None])[:, None, :]  # (B, 1, W)
    out = padded[np.arange(b)[:, None, None], rows, cols]
    return {**batch, "inputs": out}


class RandomFlip(grain.transforms.RandomMap):
  """Flips each image (B, H, W, C) left-right with probability 1/2."""

  def random_map(self, batch: Batch, rng: np.random.Generator) -> Batch:
    x = batch["inputs"]
    if x.ndim != 4:
      raise ValueError(f"data.augment.flip needs images (B, H, W, C); got inputs of shape "
                       f"{x.shape}")
    flip = rng.random(x.shape[0]) < 0.5
    out = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return {**batch, "inputs": out}


def defaults() -> mlc.ConfigDict:
  """The `config.data.augment` section: every augmentation off."""
  c = mlc.ConfigDict()
  c.shift = 0                            # 1-D: max translation in samples
  c.noise_std = 0.0                      # additive Gaussian, normalised units
  c.crop_padding = 0                     # images: pad-and-crop
  c.flip = False                         # images: random left-right flip
  return c


def build(augment: Any, stats: Statistics | None, train: bool,
          binarize: bool = False, dtype: str = "float32", pixels: bool = False) -> list[Any]:
  """The transform list for a split: augmentation only for training, normalisation (and
  binarisation) always, the cast to `dtype` (`data.dtype`) last. With `pixels` (uint8 images
  the step normalises, `data.image.normalize_on_device`), no normalisation or cast to float."""
  out: list[Any] = []
  if train and augment.crop_padding > 0:
    out.append(RandomCrop(augment.crop_padding))
  if train and augment.flip:
    out.append(RandomFlip())
  if train and augment.shift > 0:
    out.append(RandomShift1D(augment.shift))
  if not pixels:
    out.append(Normalize(stats))
  elif stats is not None:
    raise ValueError("uint8 pixels normalised on the device take no data.normalize statistics")
  if binarize:
    out.append(Binarize())
  if train and augment.noise_std > 0:
    out.append(GaussianNoise(augment.noise_std))
  if dtype != "float32":
    out.append(CastInputs(dtype))
  return out
