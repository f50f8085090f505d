"""RandAugment (Cubuk et al. 2019) on uint8 (H, W, 3) images, one example at a time.

The policy of big_vision's `randaug(2, 10)` (its `pp/autoaugment.py`, forked from the TPU
EfficientNet code): each of `num_layers` layers picks one of 16 ops uniformly and applies it at
`magnitude` (0..10). Geometric ops fill uncovered pixels with grey 128; rotation, shear and
translation take a random sign. The ops are PIL's, which that code's ops are written to equal,
with one deliberate difference: `contrast` blends towards the mean grey level (PIL's
`ImageEnhance.Contrast`), where the TensorFlow port blends towards pixel_count / 256 (a known
slip in its histogram mean).

Magnitude M maps to each op's strength as in that code: rotate 30 M/10 degrees, shear 0.3 M/10,
translate 100 M/10 pixels, cutout a square of side 2 * 40 M/10, posterize to int(4 M/10) bits,
solarize above int(256 M/10) (so M = 10 leaves the image unchanged, as there), solarize-add
int(110 M/10), and enhancement factors 0.1 + 1.8 M/10 for color, contrast, brightness and
sharpness.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
       "Cutout", "SolarizeAdd")
TRANSLATE_PIXELS = 100
CUTOUT_PAD = 40


def _signed(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() < 0.5 else value


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
  """Output pixel (x, y) takes input pixel (a x + b y + c, d x + e y + f), nearest neighbour."""
  return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST,
                         fillcolor=FILL)


def solarize_add(image: Image.Image, addition: int, threshold: int = 128) -> Image.Image:
  """Pixels below `threshold` get `addition` added (clipped to 0..255); the rest are kept."""
  lut = [min(255, max(0, v + addition)) if v < threshold else v for v in range(256)]
  return image.point(lut * len(image.getbands()))


def cutout(image: Image.Image, pad: int, rng: np.random.Generator) -> Image.Image:
  """A (2 pad, 2 pad) grey square centred on a uniformly drawn pixel, clipped to the image."""
  w, h = image.size
  cy, cx = int(rng.integers(h)), int(rng.integers(w))
  out = image.copy()
  out.paste(FILL, (max(0, cx - pad), max(0, cy - pad), min(w, cx + pad), min(h, cy + pad)))
  return out


def apply(image: Image.Image, op: str, magnitude: float,
          rng: np.random.Generator) -> Image.Image:
  """One RandAugment op at `magnitude` (0..10) on an RGB PIL image."""
  m = magnitude / MAX_LEVEL
  factor = 0.1 + 1.8 * m
  if op == "AutoContrast":
    return ImageOps.autocontrast(image)
  if op == "Equalize":
    return ImageOps.equalize(image)
  if op == "Invert":
    return ImageOps.invert(image)
  if op == "Rotate":
    return image.rotate(_signed(30.0 * m, rng), Image.Resampling.NEAREST, fillcolor=FILL)
  if op == "Posterize":
    bits = int(4 * m)
    # PIL takes 1..8 bits; 0 bits (M < 2.5) is all black, as the TF op's shift by 8.
    return ImageOps.posterize(image, bits) if bits else Image.new(image.mode, image.size)
  if op == "Solarize":
    return ImageOps.solarize(image, int(256 * m))
  if op == "SolarizeAdd":
    return solarize_add(image, int(110 * m))
  if op == "Color":
    return ImageEnhance.Color(image).enhance(factor)
  if op == "Contrast":
    return ImageEnhance.Contrast(image).enhance(factor)
  if op == "Brightness":
    return ImageEnhance.Brightness(image).enhance(factor)
  if op == "Sharpness":
    return ImageEnhance.Sharpness(image).enhance(factor)
  if op == "ShearX":
    return _affine(image, (1.0, _signed(0.3 * m, rng), 0.0, 0.0, 1.0, 0.0))
  if op == "ShearY":
    return _affine(image, (1.0, 0.0, 0.0, _signed(0.3 * m, rng), 1.0, 0.0))
  if op == "TranslateX":
    return _affine(image, (1.0, 0.0, _signed(TRANSLATE_PIXELS * m, rng), 0.0, 1.0, 0.0))
  if op == "TranslateY":
    return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, _signed(TRANSLATE_PIXELS * m, rng)))
  if op == "Cutout":
    return cutout(image, int(CUTOUT_PAD * m), rng)
  raise ValueError(f"unknown RandAugment op {op!r}; expected one of {OPS}")


def randaugment(image: np.ndarray, rng: np.random.Generator, num_layers: int = 2,
                magnitude: float = 10.0) -> np.ndarray:
  """`num_layers` ops drawn uniformly from `OPS`, each applied at `magnitude`; uint8
  (H, W, 3) in and out. Deterministic given `rng`'s state."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"randaugment takes uint8 (H, W, 3) images; got {image.dtype} "
                     f"{image.shape}")
  pil = Image.fromarray(image)
  for _ in range(num_layers):
    pil = apply(pil, OPS[int(rng.integers(len(OPS)))], magnitude, rng)
  return np.asarray(pil)
