"""Peak host memory of a streaming training run against the size of the dataset.

  python -m benchmarks.streaming_memory [--images 10000,1000000] [--image_size 64]
                                        [--steps 300] [--workers 2] [--eval_split test]
                                        [--data_dir DIR] [--out DIR]

For each build size, trains `experiments/shapes_resnet.py` (streaming, `data.workers` worker
processes) for `--steps` steps in a fresh process, then evaluates `--eval_split` once (the
final evaluation every run ends with), and samples the memory of that process and its children
(the workers) every 50 ms. Peaks are kept per phase, training (until the last step's record is
written) and evaluation, as two sums over the process tree: RSS (each worker's pages shared with
the parent counted again) and PSS (shared pages split, the memory the tree occupies; see
`benchmarks/peak_memory.py`). Also reported: the build's size on disk and steps/s. Builds that
are missing are prepared first (not timed). A streaming run holds only the batches in flight,
the per-epoch order of example indices (8 bytes an example) and the model, so no peak should
grow with the build. During the evaluation the training workers stay alive beside the
evaluation's own, so that phase's plateau is higher; a short evaluation split (the small
build's 1,000 test images, two batches) ends before reaching it, so compare like with like with
`--eval_split` (for example `train[:10000]` for every build).

Writes OUT/streaming_memory.json and OUT/streaming_memory.md, and prints the table.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.peak_memory import PeakMemory
from train import cli, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _trained(workdir: str, steps: int) -> bool:
  """Whether the run in `workdir` has written its train record for step `steps`."""
  try:
    with open(os.path.join(workdir, files.METRICS)) as f:
      return any(f'"step": {steps}, "split": "train"' in line for line in f)
  except FileNotFoundError:
    return False


def measure(images: int, steps: int, workers: int, data_dir: str,
            image_size: int = 64, eval_split: str = "test") -> dict[str, float]:
  """Peak RSS and PSS sums (MB) of the process tree in training and in the final evaluation of
  `eval_split`, steps/s and the build's bytes, for one run on a build of `images` JPEGs of
  `image_size` px (cropped to the experiment's 56 px)."""
  from data import build_files, sources
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
         f"--config.data.eval_split={eval_split}",
         "--config.train.eval_every=0", f"--config.train.checkpoint_every={steps}",
         f"--config.train.log_every={steps}"]
  try:
    with tempfile.TemporaryFile("w+") as err:
      proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
      with PeakMemory(proc.pid, phase="training") as mem:
        while proc.poll() is None:
          if "evaluation" not in mem.peaks and _trained(workdir, steps):
            mem.phase("evaluation")
          time.sleep(0.2)
      if proc.returncode:
        err.seek(0)
        raise ChildProcessError(f"training on {images} images failed: "
                                f"{err.read().strip().splitlines()[-1:]}")
    with open(os.path.join(workdir, files.SUMMARY)) as f:
      wall = json.load(f)["wall_time_s"]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  build = os.path.dirname(build_files.split_files(sources._builder(config.data), "train")[0])
  row = {"images": info.split_sizes["train"], "image_size": image_size,
         "build_gb": _du(build) / 1e9, "eval_split": eval_split,
         "peak_rss_mb": mem.peak / 2**20, "steps_per_s": steps / wall}
  for phase, peak in mem.peaks.items():
    row[f"{phase}_rss_mb"] = peak["rss"] / 2**20
    row[f"{phase}_pss_mb"] = peak["pss"] / 2**20
  return row


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", default="10000,1000000")
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--eval_split", default="test",
                 help="the final evaluation's split (a TFDS slice such as train[:10000] works)")
  p.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  try:
    sizes = [int(n) for n in args.images.split(",")]
  except ValueError:
    cli.fail(f"--images={args.images!r}; expected build sizes like 10000,1000000", 2)
  rows = []
  for n in sizes:
    rows.append(measure(n, args.steps, args.workers, args.data_dir, args.image_size,
                        args.eval_split))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "streaming_memory.json"), "w") as f:
    json.dump({"steps": args.steps, "workers": args.workers, "eval_split": args.eval_split,
               "runs": rows}, f, indent=1)
  lines = ["| images | px | build on disk | eval split | peak RSS / PSS, training | "
           "peak RSS / PSS, evaluation | steps/s |", "|---|---|---|---|---|---|---|"]

  def mb(r, phase):
    return f"{r.get(phase + '_rss_mb', 0):.0f} / {r.get(phase + '_pss_mb', 0):.0f} MB"

  lines += [f"| {r['images']:,} | {r['image_size']} | {r['build_gb']:.2f} GB | "
            f"{r['eval_split']} | {mb(r, 'training')} | {mb(r, 'evaluation')} | "
            f"{r['steps_per_s']:.2f} |" for r in rows]
  table = "\n".join(lines)
  with open(os.path.join(args.out, "streaming_memory.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  cli.guarded(main)
