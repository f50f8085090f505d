"""JPEG decoding and crop resizing, per image, on `shapes` JPEGs: the decoders and resizes the
input pipeline could use, timed alone in one process.

  python -m benchmarks.image_decode [--images 200] [--size 256]

Decoders: PIL (TFDS's numpy decoding without OpenCV), simplejpeg (libjpeg-turbo; the decode op's;
and with its fast integer DCT, measured and not used), OpenCV's `imdecode`. Resizes of one crop (180
x 158 of 256 px) to 224 x 224: PIL's antialiased bilinear, OpenCV's `resize` of the sliced window,
and `image_ops.resize_box` (an enlargement: OpenCV's affine warp); and of one larger crop (246 x 241
of 256 px, a shrink): PIL's and `image_ops.resize_box`'s (fast_image_resize). Prints ms an image
(median of 3 passes over the images) and the largest pixel difference from PIL's decoding, or from
PIL's resize of the same box; then the share of Inception crops that are enlargements.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Callable

import numpy as np
from PIL import Image

from data import image_ops
from train import cli


def _ms(fn: Callable[[bytes], object], images: list[bytes]) -> float:
  for data in images[:10]:
    fn(data)
  passes = []
  for _ in range(3):
    t = time.perf_counter()
    for data in images:
      fn(data)
    passes.append((time.perf_counter() - t) / len(images))
  return 1e3 * statistics.median(passes)


def measure(images: int = 200, size: int = 256) -> dict[str, tuple[float, int]]:
  """{name: (ms an image, largest |difference| from PIL's decoding, or for the resizes from
  PIL's resize)}."""
  import simplejpeg

  from data import shapes

  data = [shapes.jpeg("train", i, 10, size)[0] for i in range(images)]
  pil = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
  decoders = {"PIL": pil, "simplejpeg": lambda b: simplejpeg.decode_jpeg(b, "RGB"),
              "simplejpeg, fast integer DCT (not used)":
                  lambda b: simplejpeg.decode_jpeg(b, "RGB", fastdct=True)}
  import cv2

  decoders["OpenCV imdecode"] = lambda b: cv2.cvtColor(
      cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
  reference = pil(data[0])
  out = {name: (_ms(fn, data), int(np.abs(fn(data[0]).astype(int) - reference).max()))
         for name, fn in decoders.items()}
  # left, top, right, bottom: 70% x 62% of the image (180 x 158 pixels of a 256 px one)
  crop = tuple(round(f * size) for f in (0.08, 0.12, 0.78, 0.74))
  image = Image.fromarray(reference)
  window = reference[crop[1]:crop[3], crop[0]:crop[2]]
  resizes = {
      "PIL resize, antialiased bilinear":
          lambda _: np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR, box=crop)),
      "OpenCV resize of the window, bilinear":
          lambda _: cv2.resize(window, (224, 224), interpolation=cv2.INTER_LINEAR),
      "image_ops.resize_box (OpenCV warpAffine)":
          lambda _: image_ops.resize_box(reference, 224, 224, crop)}
  # 96% x 94% of the image (246 x 241 pixels of a 256 px one): shrunk to 224
  big = tuple(round(f * size) for f in (0.03, 0.02, 0.99, 0.96))
  shrinks = {
      "PIL resize of a larger crop (a shrink), antialiased bilinear":
          lambda _: np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR, box=big)),
      "image_ops.resize_box of it (fast_image_resize)":
          lambda _: image_ops.resize_box(reference, 224, 224, big)}
  for group in (resizes, shrinks):
    resized = next(iter(group.values()))(None)  # PIL's, the reference of the others
    for name, fn in group.items():
      out[name] = (_ms(fn, data), int(np.abs(fn(None).astype(int) - resized).max()))
  return out


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=200)
  p.add_argument("--size", type=int, default=256)
  args = p.parse_args(argv)
  print("| op | ms an image | largest difference from PIL's pixels (decoding, resize) |")
  print("|---|---|---|")
  for name, (ms, diff) in measure(args.images, args.size).items():
    print(f"| {name} | {ms:.3f} | {diff} |")
  print(f"\nInception crops of a {args.size} px image to 224 that enlarge (OpenCV's warp): "
        f"{enlarging_share(args.size):.0%} of 10,000")


def enlarging_share(size: int, crops: int = 10_000) -> float:
  """The share of Inception crops (`image_ops.inception_box`, default scale and ratio) of a
  (size, size) image that are no larger than 224 x 224: those `resize_box` enlarges."""
  rng = np.random.default_rng(0)
  boxes = [image_ops.inception_box(rng, size, size) for _ in range(crops)]
  return sum(right - left <= 224 and bottom - top <= 224
             for left, top, right, bottom in boxes) / crops


if __name__ == "__main__":
  cli.guarded(main)
