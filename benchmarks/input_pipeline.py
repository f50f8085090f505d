"""Input-pipeline benchmark: images/s of ImageNet-style training preprocessing on one build of
`shapes` JPEGs, for strata's streaming pipeline, tf.data and a PyTorch DataLoader.

  python -m benchmarks.input_pipeline [--images 5000] [--image_size 256] [--batches 12]
                                      [--rounds 3] [--workers 1,2] [--data_dir DIR] [--out DIR]

Every contender reads the same prepared files (TFDS ArrayRecord shards of JPEG records) and does
the same work per image: JPEG decode, Inception random-resized crop to 224 (area 0.08-1, aspect
3/4-4/3), random left-right flip, normalisation with ImageNet's mean and std to float32, then
batches of 256 (HWC):
- strata: `data.build_pipeline` in streaming mode with `data.workers` = W worker processes
  (grain's mp_prefetch), ops `decode|random_resized_crop|flip|normalize` (PIL decode and
  resize, `data/image_ops.py`).
- tf.data: `tfds.builder(...).as_dataset(...)` on the same build written as TFRecord (tf.data
  does not read ArrayRecord; the records hold the same JPEG bytes), with the image left encoded,
  `tf.image.sample_distorted_bounding_box` + `decode_and_crop_jpeg` + bilinear resize + flip +
  normalise mapped with `num_parallel_calls` = W on a private thread pool of W threads, batched,
  prefetched (the flax ImageNet example's input pipeline). Needs TensorFlow:
  `pip install -e '.[tfdata]'`; skipped without it.
- PyTorch: a `torch.utils.data.Dataset` reading the same ArrayRecord records by index, PIL
  decode, the torchvision RandomResizedCrop algorithm on the PIL image (PIL crop + bilinear
  resize), flip, normalise; `DataLoader(batch_size=256, shuffle=True, num_workers=W)`.
  torchvision itself is not used: its PyPI wheel needs the CUDA build of torch.
"strata, uint8" and "tf.data, uint8" are the same with the last step left out: batches of uint8
pixels, which the training step normalises (strata's `data.image.normalize_on_device`; tf.data
rounds its float resize back to uint8).
Each contender and worker count runs in its own process, in `--rounds` interleaved rounds (the
median round is reported, every round listed); after 2 warm-up batches it times `--batches`
batches and samples the resident memory of the process and its children (the
workers) every 50 ms: the peak of the sum is reported.

Then the pipeline overhead of a small ResNet step (`cnn.ResNetTiny` at 224 px, batch 256): steps/s
fed by strata's streaming pipeline against steps/s on one batch already in memory, in 3
alternated windows of `--batches` / 2 steps each (medians); overhead = 1 - fed / in-memory (the
share of step time spent waiting for input), with float32 batches and with uint8 ones normalised
in the step.

Writes OUT/input_pipeline.json and OUT/input_pipeline.md, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

from benchmarks.peak_memory import PeakMemory
from train import cli

BATCH = 256
OVERHEAD_WINDOWS = 3
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def _data_config(args):
  from train import config as config_lib

  c = config_lib.base().data
  c.source = "shapes"
  c.data_dir = args.data_dir
  c.builder_config.num_examples = args.images
  c.builder_config.image_size = args.image_size
  c.batch_size = BATCH
  c.in_memory = "false"
  c.image.train = ("decode", "random_resized_crop", "flip", "normalize")
  c.image.size = SIZE
  return c



def _time_batches(batches, n: int, check: Callable[[Any], None]) -> float:
  """Images/s over `n` batches after 2 warm-up batches."""
  for _ in range(2):
    check(next(batches))
  start = time.perf_counter()
  for _ in range(n):
    check(next(batches))
  return n * BATCH / (time.perf_counter() - start)


def _check_shape(batch) -> None:
  shape = tuple(batch[0].shape) if isinstance(batch, (list, tuple)) else batch["inputs"].shape
  assert tuple(shape)[-3:] in ((SIZE, SIZE, 3),), shape


def run_strata(args, pixels: bool = False) -> float:
  import data as data_lib

  c = _data_config(args)
  c.workers = args.run_workers
  c.image.normalize_on_device = pixels
  pipe = data_lib.build_pipeline(c, "train", train=True, seed=0)
  it = pipe.iterator(prefetch=2)
  try:
    return _time_batches(it, args.batches, _check_shape)
  finally:
    it.close()


def run_tfdata(args, pixels: bool = False) -> float:
  import tensorflow as tf
  import tensorflow_datasets as tfds

  from data import shapes

  # tf.data reads TFRecord, not ArrayRecord: the same build (the same JPEG bytes, a pure function
  # of the split and index) written as TFRecord shards beside it.
  config = shapes.shapes_config({"num_examples": args.images, "image_size": args.image_size})
  builder = shapes.StrataShapes(data_dir=os.path.join(args.data_dir, "tfrecord"),
                                config=config.name if not config.overrides else config,
                                file_format="tfrecord")
  if not builder.is_prepared():
    builder.download_and_prepare()
  ds = builder.as_dataset(split="train", shuffle_files=False,  # the build is ordered
                          decoders={"image": tfds.decode.SkipDecoding()})

  def preprocess(example):
    shape = tf.io.extract_jpeg_shape(example["image"])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    y, x, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(size)
    image = tf.image.decode_and_crop_jpeg(example["image"], tf.stack([y, x, h, w]), channels=3)
    image = tf.image.resize(image, [SIZE, SIZE], method="bilinear")
    image = tf.image.random_flip_left_right(image)
    if pixels:  # the resized image rounded back to uint8, for the step to normalise
      return tf.saturate_cast(tf.round(image), tf.uint8), example["label"]
    return (image - MEAN) / STD, example["label"]

  options = tf.data.Options()
  options.threading.private_threadpool_size = args.run_workers
  ds = ds.with_options(options).repeat().shuffle(4 * BATCH)
  ds = ds.map(preprocess, num_parallel_calls=args.run_workers).batch(BATCH, drop_remainder=True)
  ds = ds.prefetch(2)
  return _time_batches(iter(tfds.as_numpy(ds)), args.batches, _check_shape)


class _TorchShapes:
  """A map-style dataset (torch.utils.data.Dataset) over the build's records: the TFDS data
  source with the image left encoded (the same reader strata uses), PIL for the rest."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int):
    import io

    import torch
    from PIL import Image

    from data.image_ops import inception_box  # torchvision's RandomResizedCrop sampling

    record = self._source[i]
    rng = np.random.default_rng()
    with Image.open(io.BytesIO(record["image"])) as img:
      img = img.convert("RGB")
      box = inception_box(rng, img.height, img.width)
      img = img.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=box)
      if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      x = (np.asarray(img, np.float32) - MEAN) / STD
    return torch.from_numpy(x), int(record["label"])


def run_torch(args) -> float:
  import torch

  from data import sources

  dataset = _TorchShapes(sources.open_split(_data_config(args), "train", raw_inputs=True))
  loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       num_workers=args.run_workers, drop_last=True,
                                       persistent_workers=True, prefetch_factor=2)

  def forever():
    while True:
      yield from loader
  return _time_batches(forever(), args.batches, _check_shape)


def run_overhead(args) -> dict[str, Any]:
  """Steps/s of a small ResNet fed by the streaming pipeline and fed one in-memory batch, in
  `OVERHEAD_WINDOWS` alternated windows of `--batches` / 2 steps each: the step's rate drifts
  over a process's life, and timing all of one before all of the other would count that drift
  as input wait."""
  import jax

  from train import config as config_lib
  from train import loop, parallel

  c = config_lib.base()
  with c.unlocked():
    c.data = _data_config(args)
    c.data.workers = args.run_workers
    c.data.prefetch = 2
  c.data.image.normalize_on_device = args.pixels
  c.model = dict(name="cnn.ResNetTiny", num_classes=10)
  c.optim.name = "momentum"
  c.optim.learning_rate = 0.1
  run = loop.build(c)
  state = run.init_state()
  it = run.train_pipe.iterator(prefetch=2)
  feeds = {"in_memory": lambda: run.example,
           "fed": lambda: parallel.global_batch(next(it), run.batch_sharding)}
  n = max(1, args.batches // 2)
  rates: dict[str, list[float]] = {k: [] for k in feeds}
  try:
    for feed in feeds.values():  # compile, start the workers
      for _ in range(2):
        state, _ = run.train_step(state, feed(), run.step_rng)
    jax.block_until_ready(state)
    for _ in range(OVERHEAD_WINDOWS):
      for name, feed in feeds.items():
        start = time.perf_counter()
        for _ in range(n):
          state, _ = run.train_step(state, feed(), run.step_rng)
        jax.block_until_ready(state)
        rates[name].append(n / (time.perf_counter() - start))
  finally:
    it.close()
  fixed, fed = (sorted(rates[k])[len(rates[k]) // 2] for k in feeds)
  shares = [1 - f / m for m, f in zip(rates["in_memory"], rates["fed"])]
  return {"steps_per_s_in_memory": fixed, "steps_per_s_fed": fed,
          "input_bound_share": max(0.0, 1 - fed / fixed),
          "input_bound_share_windows": shares}


RUNNERS = {"strata": run_strata, "strata, uint8": lambda a: run_strata(a, pixels=True),
           "tf.data": run_tfdata, "tf.data, uint8": lambda a: run_tfdata(a, pixels=True),
           "pytorch": run_torch}


def _child(args) -> None:
  with PeakMemory() as rss:
    if args.run == "overhead":
      result: dict[str, Any] = run_overhead(args)
    else:
      result = {"images_per_s": RUNNERS[args.run](args)}
  result["peak_rss_mb"] = rss.peak / 2**20
  print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, run: str, workers: int, pixels: bool = False) -> dict[str, Any] | str:
  cmd = [sys.executable, "-m", "benchmarks.input_pipeline", f"--run={run}",
         f"--run_workers={workers}", f"--images={args.images}",
         f"--image_size={args.image_size}", f"--batches={args.batches}",
         f"--data_dir={args.data_dir}"] + (["--pixels"] if pixels else [])
  proc = subprocess.run(cmd, capture_output=True, text=True)
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  return f"failed: {tail[:200]}"


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=5000)
  p.add_argument("--image_size", type=int, default=256)
  p.add_argument("--batches", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--workers", default="1,2")
  p.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--run", choices=[*RUNNERS, "overhead"], help=argparse.SUPPRESS)
  p.add_argument("--run_workers", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--pixels", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.run:
    _child(args)
    return
  try:
    workers = [int(w) for w in args.workers.split(",")]
  except ValueError:
    cli.fail(f"--workers={args.workers!r}; expected worker counts like 1,2", 2)
  from data import sources

  print(f"preparing shapes: {args.images} images of {args.image_size} px in {args.data_dir}",
        file=sys.stderr)
  info = sources.source_info(_data_config(args))
  results: dict[str, Any] = {"images": info.split_sizes["train"], "image_size": args.image_size,
                             "batch": BATCH, "crop": SIZE, "batches": args.batches,
                             "cpus": os.cpu_count(), "runs": {}}
  try:
    import tensorflow  # noqa: F401
    have_tf = True
  except ImportError:
    have_tf = False
  # Rounds of every (contender, workers), interleaved, so that a drift in the machine's speed
  # (here +-15% from one minute to the next) touches all of them; the median round is reported.
  samples: dict[str, list[Any]] = {}
  for r in range(args.rounds):
    for run in RUNNERS:
      for w in workers:
        key = f"{run} W={w}"
        if run.startswith("tf.data") and not have_tf:
          samples[key] = ["skipped: TensorFlow not installed (pip install -e '.[tfdata]')"]
          continue
        samples.setdefault(key, []).append(_spawn(args, run, w))
        print(f"round {r}: {key}: {samples[key][-1]}", file=sys.stderr, flush=True)
  for key, got in samples.items():
    ok = [g for g in got if isinstance(g, dict)]
    if not ok:
      results["runs"][key] = got[0]
      continue
    rates = sorted(g["images_per_s"] for g in ok)
    results["runs"][key] = {"images_per_s": rates[len(rates) // 2],
                            "images_per_s_rounds": [g["images_per_s"] for g in ok],
                            "peak_rss_mb": max(g["peak_rss_mb"] for g in ok)}
  results["overhead"] = {f"{kind}, W={w}": _spawn(args, "overhead", w, kind == "uint8")
                         for w in workers for kind in ("float32", "uint8")}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "input_pipeline.json"), "w") as f:
    json.dump(results, f, indent=1)
  lines = ["| pipeline | workers | images/s (median of rounds) | rounds | peak RSS (MB) |",
           "|---|---|---|---|---|"]
  for key, r in results["runs"].items():
    name, w = key.split(" W=")
    if isinstance(r, str):
      lines.append(f"| {name} | {w} | {r} | | |")
    else:
      rounds = ", ".join(f"{v:.0f}" for v in r["images_per_s_rounds"])
      lines.append(f"| {name} | {w} | {r['images_per_s']:.0f} | {rounds} | "
                   f"{r['peak_rss_mb']:.0f} |")
  lines += ["", "| ResNetTiny step, 224 px, batch 256 | steps/s in memory | steps/s fed | "
            "input-bound share | window by window |", "|---|---|---|---|---|"]
  for key, r in results["overhead"].items():
    if isinstance(r, str):
      lines.append(f"| streaming {key} | {r} | | | |")
    else:
      windows = ", ".join(f"{100 * v:.0f}%" for v in r["input_bound_share_windows"])
      lines.append(f"| streaming {key} | {r['steps_per_s_in_memory']:.2f} | "
                   f"{r['steps_per_s_fed']:.2f} | {100 * r['input_bound_share']:.0f}% | "
                   f"{windows} |")
  table = "\n".join(lines)
  with open(os.path.join(args.out, "input_pipeline.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  cli.guarded(main)
