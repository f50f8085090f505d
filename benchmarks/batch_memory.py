"""The cost of a worker's batch memory: filling an ImageNet batch (256 x 224 x 224 x 3) image by
image into a fresh shared-memory segment, as grain allocates one per batch, against a recycled
segment of `data.shared_batches`, and against fresh ordinary memory.

  python -m benchmarks.batch_memory [--batches 7] [--batch 256] [--size 224]

Each way makes a batch, hands it over (grain: the main process unlinks the segment when the batch
is freed; recycled: a `Token` opened and freed on the main process's side, in this process),
and frees it, `--batches` times; prints ms a batch (median) and ms an image, for float32 and
uint8 batches.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from data import shared_batches
from train import cli


def _fill(batch: np.ndarray, image: np.ndarray) -> None:
  for i in range(len(batch)):  # one image at a time, as `data.batches` writes them
    batch[i] = image


def _grain(shape, dtype, image) -> None:
  from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

  batch = SharedMemoryArray(shape, dtype)
  _fill(batch, image)
  batch.unlink_on_del()
  del batch


def _ordinary(shape, dtype, image) -> None:
  _fill(np.empty(shape, dtype), image)


def _recycled(opener: shared_batches._Opener) -> Callable[..., None]:
  def make(shape, dtype, image) -> None:
    batch = shared_batches.take(shape, dtype)
    _fill(batch, image)
    received = opener.open(shared_batches.send({"inputs": batch}))
    del batch, received
  return make


def measure(batches: int = 7, batch: int = 256, size: int = 224) -> dict[str, float]:
  """ms a batch, median over `batches`, by way and dtype."""
  out = {}
  with shared_batches.both_sides_here() as opener:
    for dtype in (np.float32, np.uint8):
      image = np.random.default_rng(0).integers(0, 255, (size, size, 3)).astype(dtype)
      shape = (batch, size, size, 3)
      for name, way in (("grain's fresh shared memory", _grain),
                        ("recycled shared memory (data.shared_batches)", _recycled(opener)),
                        ("fresh ordinary memory (np.empty)", _ordinary)):
        times = []
        for _ in range(batches + 1):
          t = time.perf_counter()
          way(shape, dtype, image)
          times.append(time.perf_counter() - t)
        out[f"{name}, {np.dtype(dtype).name}"] = 1e3 * statistics.median(times[1:])
  return out


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batches", type=int, default=7)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--size", type=int, default=224)
  args = p.parse_args(argv)
  if args.batch * args.size * args.size * 3 < shared_batches.MIN_BYTES:
    cli.fail(f"--batch={args.batch} --size={args.size}: a uint8 batch of "
             f"{args.batch * args.size ** 2 * 3:,} bytes; expected at least "
             f"{shared_batches.MIN_BYTES:,}, the least that data.shared_batches pools", 2)
  if not shared_batches.available():
    cli.fail("/dev/shm is not writable here; expected POSIX shared memory as files", 2)
  print("| batch memory | ms a batch | ms an image |")
  print("|---|---|---|")
  for name, ms in measure(args.batches, args.batch, args.size).items():
    print(f"| {name} | {ms:.1f} | {ms / args.batch:.3f} |")


if __name__ == "__main__":
  main()
