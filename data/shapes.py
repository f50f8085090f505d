"""`shapes`: a generated image-classification dataset of JPEGs, as large as asked.

Each class is a (shape, texture) pair: 10 shapes (disc, square, triangle, pentagon, hexagon,
star, cross, ring, diamond, arrow) times 3 textures (solid, stripes, checks), so up to 30
classes; class c is shape c % 10 with texture c // 10. Every image draws its own background (a
two-colour gradient with pixel noise), position, size (20-60% of the side), rotation and
colours, so a classifier has to learn the shape and the texture, not a template. Example i of a
split is a pure function of (split, i): builds of any size agree on their common prefix.

`data.builder_config` sets `num_examples` (training images, default 10,000; the test split has
a tenth of that, at least 100 and at most 50,000), `num_classes` (2-30, default 10) and
`image_size` (16-1024 pixels, default 64). JPEG quality 90. Preparing prints progress to stderr
and draws in one process per core; TFDS writes ArrayRecord shards with bounded memory, so a
build may exceed the host's memory (1,000,000 images of 64 px take about 3 GB, of 256 px about
20 GB).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import sys
import time
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from data.offline import OfflineBuilder

SHAPES = ("disc", "square", "triangle", "pentagon", "hexagon", "star", "cross", "ring",
          "diamond", "arrow")
TEXTURES = ("solid", "stripes", "checks")
DEFAULTS = {"num_examples": 10_000, "num_classes": 10, "image_size": 64}
LIMITS = {"num_examples": (10, 100_000_000), "num_classes": (2, len(SHAPES) * len(TEXTURES)),
          "image_size": (16, 1024)}
_SPLIT_IDS = {"train": 0, "test": 1}
SMALL_BUILD = 5_000  # images; smaller builds are drawn without worker processes
SHARD_IMAGES = 50_000  # images per ArrayRecord shard


def test_size(num_examples: int) -> int:
  return int(min(max(num_examples // 10, 100), 50_000))


def _outline(shape: str, rng: np.random.Generator) -> list[tuple[float, float]]:
  """The shape's polygon on the unit disc (disc and ring: a 48-gon), rotated at random."""
  turn = rng.uniform(0, 2 * math.pi)

  def ring(radii, n):
    return [(r * math.cos(turn + 2 * math.pi * k / n), r * math.sin(turn + 2 * math.pi * k / n))
            for k, r in zip(range(n), radii)]

  if shape in ("disc", "ring"):
    return ring([1.0] * 48, 48)
  if shape == "square":
    return ring([1.0] * 4, 4)
  if shape == "triangle":
    return ring([1.0] * 3, 3)
  if shape == "pentagon":
    return ring([1.0] * 5, 5)
  if shape == "hexagon":
    return ring([1.0] * 6, 6)
  if shape == "star":
    return ring([1.0, 0.45] * 5, 10)
  if shape == "diamond":
    return ring([1.0, 0.55] * 2, 4)
  c, s = math.cos(turn), math.sin(turn)
  if shape == "cross":
    arm = [(0.3, 1), (0.3, 0.3), (1, 0.3), (1, -0.3), (0.3, -0.3), (0.3, -1), (-0.3, -1),
           (-0.3, -0.3), (-1, -0.3), (-1, 0.3), (-0.3, 0.3), (-0.3, 1)]
  else:  # arrow
    arm = [(-1, 0.25), (0.2, 0.25), (0.2, 0.7), (1, 0), (0.2, -0.7), (0.2, -0.25), (-1, -0.25)]
  return [(x * c - y * s, x * s + y * c) for x, y in arm]


def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """One (size, size, 3) uint8 image of class `label`."""
  shape, texture = SHAPES[label % len(SHAPES)], TEXTURES[label // len(SHAPES)]
  c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
  t = np.linspace(0, 1, size)[:, None, None]
  bg = c0 * (1 - t) + c1 * t
  if rng.random() < 0.5:
    bg = bg.transpose(1, 0, 2)
  bg = np.broadcast_to(bg, (size, size, 3)) + rng.normal(0, 12, (size, size, 3))
  image = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))

  radius = size * rng.uniform(0.2, 0.6) / 2
  cx, cy = rng.uniform(radius, size - radius, 2)
  mask = Image.new("L", (size, size), 0)
  pen = ImageDraw.Draw(mask)
  pen.polygon([(cx + radius * x, cy + radius * y) for x, y in _outline(shape, rng)], fill=255)
  if shape == "ring":
    pen.ellipse([cx - radius * 0.55, cy - radius * 0.55, cx + radius * 0.55,
                 cy + radius * 0.55], fill=0)

  fg = rng.integers(0, 256, 3)
  # The texture's second colour differs from the first by at least 96 in some channel.
  other = (fg + rng.integers(96, 160, 3) * rng.choice([-1, 1], 3)) % 256
  yy, xx = np.mgrid[0:size, 0:size]
  period = max(2.0, radius / 2.5)
  angle = rng.uniform(0, math.pi)
  if texture == "solid":
    pattern = np.zeros((size, size), bool)
  elif texture == "stripes":
    pattern = ((xx * math.cos(angle) + yy * math.sin(angle)) // period) % 2 == 1
  else:
    pattern = ((xx // period + yy // period) % 2) == 1
  fill = np.where(pattern[..., None], other, fg).astype(np.uint8)
  image.paste(Image.fromarray(fill), (0, 0), mask)
  return np.asarray(image)


def jpeg(split: str, index: int, num_classes: int, size: int) -> tuple[bytes, int]:
  """(JPEG bytes, label) of example `index` of `split`: a pure function of its arguments."""
  rng = np.random.default_rng([_SPLIT_IDS[split], index])
  label = int(rng.integers(num_classes))
  buf = io.BytesIO()
  Image.fromarray(draw(label, size, rng)).save(buf, format="JPEG", quality=90)
  return buf.getvalue(), label


def _chunk(args: tuple[str, int, int, int, int]) -> list[tuple[bytes, int]]:
  split, lo, hi, num_classes, size = args
  return [jpeg(split, i, num_classes, size) for i in range(lo, hi)]


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Builder arguments that differ from `DEFAULTS`."""

  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def shapes_config(overrides: dict[str, Any] | None = None) -> ShapesConfig:
  """A builder config named after its changed arguments (`default` when none).

  Raises:
    ValueError: an unknown argument or a value outside `LIMITS`, naming the field.
  """
  overrides = dict(overrides or {})
  unknown = sorted(set(overrides) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"data.builder_config: unknown shapes argument(s) {unknown}; expected "
                     f"some of {sorted(DEFAULTS)}")
  for key, value in overrides.items():
    lo, hi = LIMITS[key]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
      raise ValueError(f"data.builder_config.{key}={value!r}; expected an integer in "
                       f"[{lo}, {hi}]")
  overrides = {k: v for k, v in overrides.items() if DEFAULTS[k] != v}
  if not overrides:
    return ShapesConfig(name="default", description="10,000 64-px images of 10 classes.")
  name = "_".join(f"{k}{overrides[k]}" for k in sorted(overrides))
  blob = json.dumps(overrides, sort_keys=True)
  return ShapesConfig(name=name.replace("num_examples", "n").replace("num_classes", "c")
                      .replace("image_size", "px"), description=f"Overrides: {blob}",
                      overrides=overrides)


class StrataShapes(OfflineBuilder):
  """Generated JPEGs of shapes and textures (module docstring)."""

  BUILDER_CONFIGS = [shapes_config()]

  def args(self) -> dict[str, int]:
    return {**DEFAULTS, **self.builder_config.overrides}

  def _info(self) -> tfds.core.DatasetInfo:
    a = self.args()
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(a["image_size"], a["image_size"], 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=a["num_classes"]),
        }),
        disable_shuffling=True,  # split index i is example i; the pipeline shuffles
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    a = self.args()
    return {"train": self._generate_examples("train", a["num_examples"]),
            "test": self._generate_examples("test", test_size(a["num_examples"]))}

  def _generate_examples(self, split: str, n: int) -> Iterator[tuple[int, dict[str, Any]]]:
    a = self.args()
    step = 256
    work = [(split, lo, min(lo + step, n), a["num_classes"], a["image_size"])
            for lo in range(0, n, step)]
    start, shown, i = time.perf_counter(), -1, 0
    # One process per core for a large build; a small one (tests) is drawn here.
    workers = min(os.cpu_count() or 1, len(work)) if n >= SMALL_BUILD else 1
    with contextlib.ExitStack() as stack:
      if workers > 1:
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
        chunks = pool.imap(_chunk, work, chunksize=1)
      else:
        chunks = map(_chunk, work)
      for chunk in chunks:
        for data, label in chunk:
          yield i, {"image": io.BytesIO(data), "label": label}
          i += 1
        if 20 * i // n != shown:  # every 5%
          shown = 20 * i // n
          rate = i / max(time.perf_counter() - start, 1e-9)
          print(f"shapes {split}: {i:,}/{n:,} images ({100 * i // n}%), {rate:,.0f} images/s",
                file=sys.stderr, flush=True)

  def _generate_splits(self, dl_manager, download_config) -> list[Any]:
    """Writes each split's shards in generation order, one shard of `SHARD_IMAGES` at a time.

    TFDS's own writer sorts every split by key through a shuffler that spills to disk with
    TensorFlow once a split passes 1 GB; these examples come in key order already, so they are
    written straight to the builder's file format (ArrayRecord; TFRecord for tf.data, with
    TensorFlow) and memory stays at one image per worker whatever the
    build's size, without TensorFlow.
    """
    from tensorflow_datasets.core import example_serializer, file_adapters
    from tensorflow_datasets.core import splits as splits_lib

    del dl_manager, download_config
    serializer = example_serializer.ExampleSerializer(self.info.features.get_serialized_info())
    infos = []
    for split, examples in self._split_generators(None).items():
      n = self.args()["num_examples"] if split == "train" else test_size(
          self.args()["num_examples"])
      shards = max(1, -(-n // SHARD_IMAGES))
      template = self._get_filename_template(split_name=split)
      lengths, total = [], 0

      def serialized(chunk):
        nonlocal total
        for key, example in chunk:
          data = serializer.serialize_example(self.info.features.encode_example(example))
          total += len(data)
          yield key, data

      for shard in range(shards):
        count = min(SHARD_IMAGES, n - shard * SHARD_IMAGES)
        path = template.sharded_filepath(shard_index=shard, num_shards=shards)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_adapters.ADAPTER_FOR_FORMAT[self.info.file_format].write_examples(
            path, serialized(itertools.islice(examples, count)))
        lengths.append(count)
      infos.append(splits_lib.SplitInfo(name=split, shard_lengths=lengths, num_bytes=total,
                                        filename_template=template))
    return infos

  def builder_arguments(self) -> dict[str, Any]:
    """The arguments that determine this builder's data (part of the dataset fingerprint)."""
    return {"name": self.name, "version": str(self.version), "args": self.args(),
            "test_size": test_size(self.args()["num_examples"]),
            "draw": hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:16]}
