"""Wall-clock of `python -m train --config experiments/mnist1d_cnn.py` beside the MNIST-1D paper's
PyTorch training (benchmarks/mnist1d_torch.py), interleaved in one session so both see the same
machine, plus the two costs that shape our loop: the bare jitted step and grain batching.

  python -m benchmarks.mnist1d_cnn_speed --repeats 3 --torch_python /path/to/venv-with-torch/bin/python

Each repeat runs, in turn: ours with an empty compilation cache (cold: compiles), ours again with
the cache it filled (warm), and the PyTorch reference (if --torch_python is given). Times are from
process start to exit, with the data already prepared. Prints a JSON line per run and a summary.
The data set must be prepared (any `python -m train --config experiments/mnist1d_cnn.py` does it).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from train import cli, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROZEN = os.path.join(ROOT, "tests", "data", "mnist1d_frozen.npz")


def _timed(cmd: list[str]) -> tuple[float, str]:
  t = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if out.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
  return wall, out.stdout + out.stderr


def ours(cache: str) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    wall, log = _timed([sys.executable, "-m", "train", "--config", "experiments/mnist1d_cnn.py",
                        "--workdir", workdir, f"--compilation_cache={cache}"])
    with open(os.path.join(workdir, files.SUMMARY)) as f:
      acc = json.load(f)["final_eval"]["accuracy"]
  rates = [float(r.replace(",", "")) for r in re.findall(r"\| ([\d,]+) steps/s", log)]
  # The first window holds compilation; steady state is the median of the others.
  return {"wall_s": wall, "steady_steps_per_s": statistics.median(rates[1:]),
          "test_accuracy": acc}


def reference(python: str) -> dict:
  wall, log = _timed([python, "-m", "benchmarks.mnist1d_torch", "--data", FROZEN])
  r = json.loads(log.strip().splitlines()[-1])
  return {"wall_s": wall, "steady_steps_per_s": r["steady_steps_per_s"],
          "test_accuracy": r["test_accuracy"], "torch": r["torch"]}


def step_floor(steps: int = 2000) -> dict:
  """ms per step of the jitted train step alone, batches already on device; and ms per batch of
  grain's per-record shuffle + batch against our batch-level dataset."""
  import grain
  import jax

  import arch
  import data as data_lib
  from train import config as config_lib
  from train import paradigms

  config = config_lib.load("experiments.mnist1d_cnn")
  pipe = data_lib.build_pipeline(config.data, "train", train=True, seed=0)
  par = paradigms.get("supervised").make(arch.build(config.model), config, total_steps=steps)
  rng = jax.random.key(0)
  state = jax.jit(par.init)(rng, pipe.dataset[0])
  step = jax.jit(par.train_step)
  batches = [jax.device_put(pipe.dataset[i]) for i in range(40)]
  state, m = step(state, batches[0], rng)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for i in range(steps):
    state, m = step(state, batches[i % 40], rng)
  jax.block_until_ready(m)
  floor = (time.perf_counter() - t) / steps * 1e3

  arrays = data_lib.load_split(config.data, "train")
  records = [{"inputs": x, "label": y} for x, y in zip(arrays.inputs, arrays.labels)]
  per_record = grain.MapDataset.source(records).shuffle(seed=0).repeat().batch(100)
  n = 200
  t = time.perf_counter()
  for i in range(n):
    per_record[i]
  grain_ms = (time.perf_counter() - t) / n * 1e3
  t = time.perf_counter()
  for i in range(n):
    pipe.dataset[i]
  ours_ms = (time.perf_counter() - t) / n * 1e3
  return {"step_ms": floor, "grain_per_record_batch_ms": grain_ms,
          "batch_level_batch_ms": ours_ms}


def main() -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--torch_python", default="", help="a Python with torch for the reference")
  a = p.parse_args()
  runs: dict[str, list[dict]] = {"ours_cold": [], "ours_warm": [], "pytorch": []}
  for r in range(a.repeats):
    with tempfile.TemporaryDirectory() as cache:
      for name in ("ours_cold", "ours_warm"):
        runs[name].append(ours(cache))
        print(json.dumps({"run": name, "repeat": r, **runs[name][-1]}), flush=True)
    if a.torch_python:
      runs["pytorch"].append(reference(a.torch_python))
      print(json.dumps({"run": "pytorch", "repeat": r, **runs["pytorch"][-1]}), flush=True)
  print(json.dumps({"run": "floor", **step_floor()}), flush=True)
  print("\nmedian over repeats   wall s   steady steps/s   test accuracy")
  for name, rs in runs.items():
    if rs:
      med = {k: statistics.median(x[k] for x in rs) for k in ("wall_s", "steady_steps_per_s",
                                                             "test_accuracy")}
      print(f"{name:20s} {med['wall_s']:8.1f} {med['steady_steps_per_s']:16.0f} "
            f"{med['test_accuracy']:15.3f}")


if __name__ == "__main__":
  cli.guarded(main)
