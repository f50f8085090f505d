"""JPEG decoding and crop resizing, per image, on `shapes` JPEGs: the decoders and resizes the
input pipeline could use, timed alone in one process.

  python -m benchmarks.image_decode [--images 200] [--size 256]

Decoders: PIL (TFDS's numpy decoding without OpenCV), simplejpeg (libjpeg-turbo; the decode
op's), OpenCV's `imdecode` when installed. Resizes of one crop (180 x 158 of 256 px) to
224 x 224: PIL's antialiased bilinear (the ops'), OpenCV's plain bilinear when installed. Prints
ms an image (median of 3 passes over the images) and the largest pixel difference from PIL's
decoding.
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Callable

import numpy as np
from PIL import Image

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
  """{name: (ms an image, largest |difference| from PIL's pixels; -1 for the resizes)}."""
  import simplejpeg

  from data import shapes

  data = [shapes.jpeg("train", i, 10, size)[0] for i in range(images)]
  pil = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
  decoders = {"PIL": pil, "simplejpeg": lambda b: simplejpeg.decode_jpeg(b, "RGB")}
  try:
    import cv2

    cv2.setNumThreads(1)
    decoders["OpenCV imdecode"] = lambda b: cv2.cvtColor(
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
  except ImportError:
    cv2 = None
  reference = pil(data[0])
  out = {name: (_ms(fn, data), int(np.abs(fn(data[0]).astype(int) - reference).max()))
         for name, fn in decoders.items()}
  # left, top, right, bottom: 70% x 62% of the image (180 x 158 pixels of a 256 px one)
  crop = tuple(round(f * size) for f in (0.08, 0.12, 0.78, 0.74))
  image = Image.fromarray(reference)
  out["PIL resize, antialiased bilinear"] = (_ms(
      lambda _: image.resize((224, 224), Image.Resampling.BILINEAR, box=crop), data), -1)
  if cv2 is not None:
    window = reference[crop[1]:crop[3], crop[0]:crop[2]]
    out["OpenCV resize, bilinear"] = (_ms(
        lambda _: cv2.resize(window, (224, 224), interpolation=cv2.INTER_LINEAR), data), -1)
  return out


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=200)
  p.add_argument("--size", type=int, default=256)
  args = p.parse_args(argv)
  print("| op | ms an image | largest difference from PIL's pixels |")
  print("|---|---|---|")
  for name, (ms, diff) in measure(args.images, args.size).items():
    print(f"| {name} | {ms:.3f} | {diff if diff >= 0 else '-'} |")


if __name__ == "__main__":
  cli.guarded(main)
