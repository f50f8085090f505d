"""Preemption: SIGTERM saves the step the run stopped at and exits 0; the same command resumes to
the parameters and records of a run that was never stopped. Also time-based checkpoints and the
keep policy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.train.test_loop import (
    _assert_trees_equal,
    _free_port,
    _metrics,
    _params,
    _read_json,
    _tiny,
)
from train import checkpoint as checkpoint_lib
from train import loop


def _wait_for_record(workdir: str, proc: subprocess.Popen, step: int, timeout: float = 240):
  """Waits until the run has written a train record at `step` or later."""
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path):
      with open(path) as f:
        if any(json.loads(ln)["step"] >= step for ln in f if ln.strip()):
          return
    time.sleep(0.01)
  raise AssertionError("the run ended before it could be signalled")


@pytest.mark.slow
def test_sigterm_mid_run_saves_that_step_exits_0_and_resumes_bit_identical(data_dir, tmp_path):
  args = ["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}",
          "--config.train.steps=4000", "--config.train.checkpoint_every=0",
          "--config.train.log_every=100", "--config.train.eval_every=1000",
          "--config.model.widths=(32,)", "--config.data.augment.noise_std=0.1"]
  straight = str(tmp_path / "straight")
  r = run_cli(args + [f"--workdir={straight}"])
  assert r.returncode == 0, r.stderr[-2000:]

  stopped = str(tmp_path / "stopped")
  proc = subprocess.Popen([sys.executable, "-m", "train", *args, f"--workdir={stopped}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for_record(stopped, proc, 500)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  saved = [int(s) for s in os.listdir(os.path.join(stopped, "checkpoints")) if s.isdigit()]
  # The notice lands at or after step 500, which is no checkpoint step (checkpoint_every=0).
  assert len(saved) == 1 and 500 <= saved[0] < 4000, saved
  assert f"stopped by SIGTERM at step {saved[0]}" in err
  assert not os.path.exists(os.path.join(stopped, "summary.json"))  # not finished

  r = run_cli(args + [f"--workdir={stopped}"])
  assert r.returncode == 0, r.stderr[-2000:]
  assert _read_json(stopped, "summary.json")["resumed_from"] == saved[0]
  _assert_trees_equal(_params(stopped, 4000), _params(straight, 4000))
  # The logging window in flight was saved with the checkpoint, not written early.
  assert _metrics(stopped) == _metrics(straight)


@pytest.mark.slow  # three in-process runs
def test_sigterm_during_evaluation_stops_it_and_the_resumed_run_evaluates_first(
    data_dir, tmp_path, monkeypatch):
  def config():
    return _tiny("mnist1d_mlp", data_dir, **{
        "train.steps": 30, "train.eval_every": 10, "train.log_every": 5,
        "train.checkpoint_every": 0, "data.eval_batch_size": 100})

  straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
  loop.train_and_evaluate(config(), straight)

  real, calls = loop.evaluate, []

  def evaluate(eval_step, *args, **kwargs):
    calls.append(len(calls))
    batches = []

    def step(*a):  # the notice lands after the first batch of the second evaluation
      batches.append(1)
      if len(calls) == 2 and len(batches) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      return eval_step(*a)
    return real(step, *args, **kwargs)

  monkeypatch.setattr(loop, "evaluate", evaluate)
  loop.train_and_evaluate(config(), stopped)
  manager = checkpoint_lib.Checkpointer(os.path.join(stopped, "checkpoints"), 3)
  assert manager.steps() == [20]
  manager.close()
  assert [(m["step"], m["split"]) for m in _metrics(stopped) if m["split"] == "eval"] == [
      (10, "eval")]

  monkeypatch.setattr(loop, "evaluate", real)
  loop.train_and_evaluate(config(), stopped)
  _assert_trees_equal(_params(stopped, 30), _params(straight, 30))
  assert _metrics(stopped) == _metrics(straight)  # the evaluation at step 20 included


def test_time_based_checkpoints_and_the_keep_policy(data_dir, tmp_path, monkeypatch):
  ticks = iter(range(0, 10_000, 7))  # every reading of the clock advances it 7 s
  timer = checkpoint_lib.SaveTimer
  monkeypatch.setattr(checkpoint_lib, "SaveTimer",
                      lambda seconds: timer(seconds, clock=lambda: float(next(ticks))))
  c = _tiny("mnist1d_mlp", data_dir, **{
      "train.steps": 12, "train.eval_every": 0, "train.checkpoint_every": 4,
      "train.checkpoint_every_secs": 20.0, "train.keep_checkpoints": 2, "train.keep_every": 8})
  loop.train_and_evaluate(c, str(tmp_path))
  manager = checkpoint_lib.Checkpointer(os.path.join(tmp_path, "checkpoints"), 2)
  # Saved: 3 (21 s after the start), 4 (period), 7 (21 s after 4), 8, 11, 12; kept: the
  # newest two and 8 (keep_every), 4 being only periodic.
  assert manager.steps() == [8, 11, 12]
  manager.close()


@pytest.mark.slow
def test_two_processes_sigterm_to_one_both_save_the_same_step(data_dir, tmp_path):
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          "--compilation_cache=", "--config.train.steps=3000",
          "--config.train.checkpoint_every=0", "--config.train.eval_every=0",
          "--config.train.log_every=100", f"--workdir={tmp_path}"]
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "train", *args,
                             f"--coordinator_address=localhost:{port}", "--num_processes=2",
                             f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  _wait_for_record(str(tmp_path), procs[0], 300)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=240)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-1500:] for o in outs]
  saved = [s for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert len(saved) == 1 and 300 <= int(saved[0]) < 3000, saved
  # Both processes wrote their data iterator's state into that one step.
  data = os.listdir(tmp_path / "checkpoints" / saved[0] / "data")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data), data


@pytest.mark.slow
def test_distributed_reads_slurm(data_dir, tmp_path):
  """`--distributed` under SLURM: two processes given the variables `srun` sets find each other
  (JAX derives the coordinator's port from the job id)."""
  import socket

  for job in range(100, 4096):  # a job id whose derived port is free here
    with socket.socket() as s:
      try:
        s.bind(("localhost", 65535 - 2 ** 12 + 1 + job))
        break
      except OSError:
        continue
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          "--compilation_cache=", "--distributed", f"--workdir={tmp_path}"]
  procs = []
  for i in range(2):
    env = dict(os.environ, SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="localhost",
               SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i))
    procs.append(subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=240)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-1500:] for o in outs]
  assert _read_json(str(tmp_path), "lineage.json")["processes"] == 2
