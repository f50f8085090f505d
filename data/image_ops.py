"""Image preprocessing ops, one example at a time: uint8 (H, W, C) in, (h, w, C) out.

Declared by name in `config.data.image.train` / `.eval` (`data/preprocess.py` composes them, in
the spirit of big_vision's `pp` strings with typed fields). Every random op draws from the
generator it is given, which the pipeline seeds from (seed, position in the stream): the same
example at the same step gets the same crop and flip, so a resumed run is exact.

- `decode`: JPEG bytes through libjpeg-turbo (`simplejpeg`: the pixels of TFDS's PIL decoding,
  in 0.27 against 0.48 ms for a 256 px image); other formats, and JPEGs it cannot convert
  (CMYK), through TFDS's numpy decoding (OpenCV's, a dependency; PIL's without it).
- `resize(image, size)`: to (size, size), or `resize_small(image, side)`: shorter side to `side`
  keeping the aspect ratio; PIL's bilinear filter (or bicubic: `method`, for every op that
  resizes), antialiased when shrinking. Bilinear resizes of 1 or 3 channels are computed faster
  than PIL does, within 1 level of its pixels: an enlargement (most Inception crops of a 256 px
  image) through OpenCV's affine warp, in a tenth of the time; a shrink (most of ImageNet's)
  through fast_image_resize's SIMD port of PIL's filter, in a quarter to a half.
- `random_resized_crop`: the Inception crop (Szegedy et al. 2015; torchvision's and the flax
  ImageNet example's sampling): a box of `scale` x area and log-uniform aspect `ratio`, 10 tries,
  else the central box of the nearest allowed ratio; resized to (size, size).
- `central_crop(image, size)`: the central (size, size) window; `central_crop_fraction`: the
  central square of `fraction` x the shorter side (the flax example's eval crop, then resized).
- `flip`: left-right with probability 1/2.
- `normalize(image, mean, std)`: (x - mean) / std in float32, per channel (units of the stored
  pixels: ImageNet's mean 123.7, 116.3, 103.5 and std 58.4, 57.1, 57.4 on 0..255).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def decode(data: bytes, feature) -> np.ndarray:
  """The stored image `data` as uint8 (H, W, C), C the TFDS image `feature`'s channels."""
  if data[:2] == b"\xff\xd8":  # a JPEG's start-of-image marker
    import simplejpeg

    # the two colour spaces stored images use, into the feature's channels; any other case
    # (CMYK, a grey JPEG in a colour feature) as TFDS decodes it
    wanted = {3: ("YCbCr", "RGB"), 1: ("Gray", "GRAY")}.get(feature.shape[-1])
    try:
      if wanted and simplejpeg.decode_jpeg_header(data)[2] == wanted[0]:
        x = simplejpeg.decode_jpeg(data, wanted[1])
        return x if x.ndim == 3 else x[..., None]
    except ValueError:  # a header libjpeg-turbo cannot read: TFDS's decoding says why
      pass
  return feature.decode_example_np(data)


def _pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _array(pil: Image.Image, channels: int) -> np.ndarray:
  out = np.asarray(pil)
  return out[..., None] if channels == 1 else out


METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resize_box(image: np.ndarray, height: int, width: int,
               box: tuple[float, float, float, float] | None = None,
               mirror: bool = False, method: str = "bilinear") -> np.ndarray:
  """The region `box` = (left, top, right, bottom) in pixels (default: all) resized to
  (height, width) with PIL's antialiased `method` filter ("bilinear" or "bicubic"), flipped
  left-right if `mirror` (in the resampler, before the array exists: no strided copy later);
  uint8 in and out. A bilinear enlargement goes through `_upsample`, a shrink of 1 or 3 channels
  through `_shrink`."""
  if image.dtype != np.uint8:
    raise ValueError(f"image ops take uint8 images; got {image.dtype}")
  h, w = image.shape[:2]
  box = (0.0, 0.0, float(w), float(h)) if box is None else tuple(float(v) for v in box)
  if (height, width) == (h, w) and box == (0.0, 0.0, float(w), float(h)):
    return np.ascontiguousarray(image[:, ::-1]) if mirror else image
  if method == "bilinear" and image.shape[-1] in (1, 3, 4):
    if box[2] - box[0] <= width and box[3] - box[1] <= height:
      return _upsample(image, height, width, box, mirror)
    if image.shape[-1] != 4 and 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h:
      return _shrink(image, height, width, box, mirror)
  out = _pil(image).resize((width, height), METHODS[method], box=box)
  if mirror:
    out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return _array(out, image.shape[-1])


def _upsample(image: np.ndarray, height: int, width: int,
              box: tuple[float, float, float, float], mirror: bool) -> np.ndarray:
  """`resize_box` of a box no larger than (height, width), bilinear: no antialiasing to do, so
  OpenCV's affine warp computes the same 2-tap filter as PIL, ~10x faster (0.03 against 0.48 ms
  for a crop to 224 px: `python -m benchmarks.image_decode`) and closer to the exact value
  (within 0.53 level of a float64 resampler, PIL within 1). The warp reads pixels outside the
  box, as PIL's filter does, and replicates the image's edge where PIL renormalises its
  weights: the same value."""
  import cv2

  left, top, right, bottom = box
  sx, sy = (right - left) / width, (bottom - top) / height
  # output pixel x (centre x + 0.5) samples the input at left + (x + 0.5) * sx, in edge units;
  # OpenCV indexes pixel centres, hence the - 0.5; mirrored, x becomes width - 1 - x
  row = ([-sx, 0.0, left + (width - 0.5) * sx - 0.5] if mirror else
         [sx, 0.0, left + 0.5 * sx - 0.5])
  matrix = np.array([row, [0.0, sy, top + 0.5 * sy - 0.5]])
  out = cv2.warpAffine(image, matrix, (width, height),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  return out[..., None] if out.ndim == 2 else out


def _shrink(image: np.ndarray, height: int, width: int,
            box: tuple[float, float, float, float], mirror: bool) -> np.ndarray:
  """`resize_box` of a box larger than (height, width) on some side, bilinear, 1 or 3 channels,
  inside the image: PIL's antialiased filter (the triangle widened by the shrink factor,
  weights renormalised at the image's edges) through `fast_image_resize`'s SIMD port of it
  (`cykooz_resizer`), within 1 level of PIL and of a float64 resampler, 2-4x faster (0.26
  against 0.59 ms for a crop of 246 x 241 to 224 px in `python -m benchmarks.image_decode`;
  0.12 ms for the resize alone)."""
  from cykooz_resizer import (
    CropBox,
    FilterType,
    ImageData,
    PixelType,
    ResizeAlg,
    ResizeOptions,
  )

  h, w, c = image.shape
  kind = PixelType.U8x3 if c == 3 else PixelType.U8
  src = ImageData(w, h, kind, image.tobytes())  # C-order bytes of any view
  dst = ImageData(width, height, kind)
  left, top, right, bottom = box
  options = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.bilinear),
                          crop_box=CropBox(left, top, right - left, bottom - top),
                          use_alpha=False)
  _resizer().resize(src, dst, options)
  out = np.frombuffer(dst.get_buffer(), np.uint8).reshape(height, width, c)
  if mirror:  # OpenCV's flip: numpy's copy of a reversed 3-byte stride is 10x slower
    import cv2

    out = cv2.flip(out, 1).reshape(height, width, c)
  return out


@functools.cache
def _resizer():
  from cykooz_resizer import Resizer

  return Resizer()


def resize(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
  """(H, W, C) -> (size, size, C)."""
  return resize_box(image, size, size, method=method)


def resize_small(image: np.ndarray, side: int, method: str = "bilinear") -> np.ndarray:
  """Shorter side to `side`, the other in proportion (rounded)."""
  h, w = image.shape[:2]
  if h <= w:
    return resize_box(image, side, max(1, round(w * side / h)), method=method)
  return resize_box(image, max(1, round(h * side / w)), side, method=method)


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central (size, size) window (offsets rounded down, as big_vision's `central_crop`)."""
  h, w = image.shape[:2]
  if size > min(h, w):
    raise ValueError(f"central_crop({size}) of a {h}x{w} image")
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def central_crop_fraction(image: np.ndarray, size: int, fraction: float,
                          method: str = "bilinear") -> np.ndarray:
  """The central square of side `fraction` x min(H, W), resized to (size, size): the flax
  ImageNet example's evaluation crop (fraction 224 / 256 = 0.875)."""
  h, w = image.shape[:2]
  side = max(1, int(fraction * min(h, w)))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  return resize_box(image, size, size, (left, top, left + side, top + side), method=method)


def inception_box(rng: np.random.Generator, height: int, width: int,
                  scale: tuple[float, float] = (0.08, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3),
                  attempts: int = 10) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of an Inception crop of a (height, width) image."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, left + w, top + h
  # Fallback: the central box with the aspect ratio clipped to the allowed range.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    w, h = width, height
  top, left = (height - h) // 2, (width - w) // 2
  return left, top, left + w, top + h


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        then_flip: bool = False, method: str = "bilinear") -> np.ndarray:
  """An Inception crop of `image` resized to (size, size); `then_flip`: followed by `flip`,
  drawing from `rng` in the same order (the same result as the two ops, one copy fewer)."""
  box = inception_box(rng, image.shape[0], image.shape[1], scale, ratio)
  mirror = bool(then_flip and rng.random() < 0.5)
  return resize_box(image, size, size, box, mirror, method)


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Left-right flip with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
              out: np.ndarray | None = None) -> np.ndarray:
  """(x - mean) x (1 / std) per channel, float32; written into `out` (a contiguous slot of the
  batch) when given, so the batch is not stacked afterwards. Normalising and stacking were 1.7
  of 3.0 ms an image as `(x.astype(float32) - mean) / std` then `np.stack`."""
  if len(mean) != image.shape[-1] or len(std) != image.shape[-1]:
    raise ValueError(f"data.image.mean={tuple(mean)} / std={tuple(std)} for images with "
                     f"{image.shape[-1]} channels; expected one value per channel")
  mean_tiled, inv_std_tiled = _tiled(image.size, tuple(mean), tuple(std))
  if out is None:
    out = np.empty(image.shape, np.float32)
  flat = out.reshape(-1)  # a view: `out` is a contiguous slot
  # Over whole-image arrays, not (H, W, 3) broadcasts: numpy's inner loop then runs the length
  # of the image instead of 3 (0.18 ms instead of 0.55 ms for 224 x 224 x 3).
  np.subtract(np.ascontiguousarray(image).reshape(-1), mean_tiled, out=flat, dtype=np.float32)
  np.multiply(flat, inv_std_tiled, out=flat)
  return out


@functools.lru_cache(maxsize=8)
def _tiled(size: int, mean: tuple[float, ...], std: tuple[float, ...]
           ) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and 1/std repeated over `size` interleaved pixel values (float32)."""
  reps = size // len(mean)
  inv_std = (1.0 / np.asarray(std, np.float64)).astype(np.float32)
  return np.tile(np.asarray(mean, np.float32), reps), np.tile(inv_std, reps)
