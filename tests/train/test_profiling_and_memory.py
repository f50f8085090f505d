"""The profiler switch writes a trace; the memory check reports per-device bytes, refuses a run
over its limit with the ways down, and `--dry_run` stops before anything is written."""

import glob
import os

import jax
import numpy as np

from tests.conftest import run_cli
from tests.train.test_loop import _tiny
from train import loop, memory


def test_profile_steps_write_a_trace(data_dir, tmp_path):
  r = run_cli(["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}",
               "--config.train.profile_steps=(3,5)", f"--workdir={tmp_path}"])
  assert r.returncode == 0, r.stderr[-2000:]
  assert "wrote a profiler trace of steps 3-5" in r.stderr
  traces = glob.glob(os.path.join(tmp_path, "profile", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_bad_profile_steps_name_the_field(data_dir, tmp_path):
  r = run_cli(["--config", "experiments/mnist1d_mlp.py:tiny", "--config.train.profile_steps=(5,3)",
               f"--workdir={tmp_path}"])
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      "error: train.profile_steps=(5, 3); expected (A, B) with 1 <= A <= B, or (0, 0) for no "
      "trace")


def test_memory_report_counts_the_state_and_refuses_past_the_limit(data_dir, tmp_path):
  config = _tiny("mnist1d_mlp", data_dir, **{"model.widths": (256,)})
  run = loop.build(config)
  compiled = loop.compile_train_step(run)
  batch = memory.device_bytes(loop.abstract_batch(run))
  usage = memory.report(run.abstract, batch, compiled)
  params = sum(x.size * 4 for x in jax.tree.leaves(run.abstract.params))
  assert usage["parameters"] == params == 4 * (40 * 256 + 256 + 256 * 10 + 10)
  assert usage["batch"] == sum(np.asarray(x).nbytes for x in jax.tree.leaves(run.example))
  assert usage["total"] >= usage["parameters"] + usage["optimizer_state"] + usage["batch"]

  r = run_cli(["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}",
               "--config.train.memory_limit_gb=0.00001", f"--workdir={tmp_path / 'over'}"])
  assert r.returncode == 1
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the train step needs ") and "train.memory_limit_gb=1e-05" in last
  assert "a smaller per-device batch (data.batch_size=" in last and "model.remat=True" in last
  assert "more mesh.fsdp (now 1" in last
  assert not os.path.exists(tmp_path / "over")  # refused before anything was written


def test_dry_run_prints_the_report_and_writes_nothing(data_dir, tmp_path):
  r = run_cli(["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}",
               "--dry_run", f"--workdir={tmp_path / 'dry'}"])
  assert r.returncode == 0, r.stderr[-2000:]
  assert "memory per device: parameters " in r.stderr and "dry run: " in r.stderr
  assert not os.path.exists(tmp_path / "dry")
