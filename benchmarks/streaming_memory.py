"""Peak host memory of a streaming training run against the size of the dataset.

  python -m benchmarks.streaming_memory [--images 10000,1000000] [--image_size 64]
                                        [--steps 300] [--workers 2] [--data_dir DIR] [--out DIR]

For each build size, trains `experiments/shapes_resnet.py` (streaming, `data.workers` worker
processes) for `--steps` steps in a fresh process and samples the resident memory of that
process and its children (the workers) every 50 ms; reports the peak of the sum, the build's
size on disk, and steps/s. Builds that are missing are prepared first (not timed). A streaming
run holds only the batches in flight, the per-epoch order of example indices (8 bytes an
example) and the model, so the peak should not grow with the build.

Writes OUT/streaming_memory.json and OUT/streaming_memory.md, and prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.input_pipeline import PeakRss
from train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def measure(images: int, steps: int, workers: int, data_dir: str,
            image_size: int = 64) -> dict[str, float]:
  """Peak RSS (MB) of the process tree, steps/s and the build's bytes for one run on a build
  of `images` JPEGs of `image_size` px (cropped to the experiment's 56 px)."""
  from data import sources
  from train import config as config_lib

  config = config_lib.load(os.path.join(ROOT, "experiments", "shapes_resnet.py"))
  with config.unlocked():
    config.data.data_dir = data_dir
    config.data.builder_config.num_examples = images
    config.data.builder_config.image_size = image_size
  info = sources.source_info(config.data)  # prepares the build if needed
  workdir = tempfile.mkdtemp(prefix="strata-mem-")
  cmd = [sys.executable, "-m", "train", "--config", "experiments/shapes_resnet.py",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         f"--config.data.builder_config.num_examples={images}",
         f"--config.data.builder_config.image_size={image_size}",
         f"--config.data.workers={workers}", f"--config.train.steps={steps}",
         "--config.train.eval_every=0", f"--config.train.checkpoint_every={steps}",
         f"--config.train.log_every={steps}"]
  try:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    with PeakRss(proc.pid) as rss:
      _, err = proc.communicate()
    if proc.returncode:
      raise ChildProcessError(f"training on {images} images failed: "
                         f"{err.strip().splitlines()[-1:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
      wall = json.load(f)["wall_time_s"]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  build = os.path.dirname(sources._split_files(sources._builder(config.data), "train")[0])
  return {"images": info.split_sizes["train"], "image_size": image_size,
          "build_gb": _du(build) / 1e9, "peak_rss_mb": rss.peak / 2**20,
          "steps_per_s": steps / wall}


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", default="10000,1000000")
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  try:
    sizes = [int(n) for n in args.images.split(",")]
  except ValueError:
    cli.fail(f"--images={args.images!r}; expected build sizes like 10000,1000000", 2)
  rows = []
  for n in sizes:
    rows.append(measure(n, args.steps, args.workers, args.data_dir, args.image_size))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "streaming_memory.json"), "w") as f:
    json.dump({"steps": args.steps, "workers": args.workers, "runs": rows}, f, indent=1)
  lines = ["| images | px | build on disk | peak RSS, process + workers | steps/s |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['images']:,} | {r['image_size']} | {r['build_gb']:.2f} GB | "
            f"{r['peak_rss_mb']:.0f} MB | {r['steps_per_s']:.2f} |" for r in rows]
  table = "\n".join(lines)
  with open(os.path.join(args.out, "streaming_memory.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  cli.guarded(main)
