"""The profiler switch writes a trace; the memory check reports per-device bytes, refuses a run
over its limit with the ways down, and `--dry_run` stops before anything is written."""

import glob
import os

import jax
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.train.test_loop import _tiny
from train import config as config_lib
from train import loop, memory


def test_profile_steps_write_a_trace(data_dir, tmp_path, capsys):
  loop.train_and_evaluate(_tiny("mnist1d_mlp", data_dir, **{"train.profile_steps": (3, 5)}),
                          str(tmp_path))
  assert "wrote a profiler trace of steps 3-5" in capsys.readouterr().err
  traces = glob.glob(os.path.join(tmp_path, "profile", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


@pytest.mark.parametrize("steps", [(5, 3), (0, 4), (1, 2, 3)])
def test_bad_profile_steps_name_the_field(data_dir, steps):
  with pytest.raises(config_lib.ConfigError, match=r"train.profile_steps=.*; expected "
                     r"\(A, B\) with 1 <= A <= B, or \(0, 0\) for no trace"):
    with_steps = _tiny("mnist1d_mlp", data_dir)
    with with_steps.unlocked():
      with_steps.train.profile_steps = steps
    config_lib.validate(with_steps)


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

  over = str(tmp_path / "over")
  with pytest.raises(memory.OutOfMemoryError) as e:
    loop.train_and_evaluate(_tiny("mnist1d_mlp", data_dir, **{"train.memory_limit_gb": 1e-5}),
                            over)
  message = str(e.value)
  assert message.startswith("the train step needs ") and "train.memory_limit_gb=1e-05" in message
  assert "a smaller per-device batch (data.batch_size=" in message and "model.remat=True" in message
  assert "more mesh.fsdp (now 1" in message and "\n" not in message
  assert not os.path.exists(over)  # refused before anything was written


def test_dry_run_prints_the_report_and_writes_nothing(data_dir, tmp_path, capsys):
  assert loop.train_and_evaluate(_tiny("mnist1d_mlp", data_dir), str(tmp_path / "dry"),
                                 dry_run=True) == {}
  err = capsys.readouterr().err
  assert "memory per device: parameters " in err and "dry run: " in err
  assert not os.path.exists(tmp_path / "dry")


@pytest.mark.slow
def test_the_command_line_dry_run_and_refusal(data_dir, tmp_path):
  base = ["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}"]
  r = run_cli(base + ["--dry_run", f"--workdir={tmp_path / 'dry'}"])
  assert r.returncode == 0 and "dry run: " in r.stderr, r.stderr[-2000:]
  r = run_cli(base + ["--config.train.memory_limit_gb=0.00001", f"--workdir={tmp_path / 'x'}"])
  assert r.returncode == 2  # a config that does not fit
  assert r.stderr.strip().splitlines()[-1].startswith("error: the train step needs ")
  assert not os.path.exists(tmp_path / "dry") and not os.path.exists(tmp_path / "x")


def test_the_fixes_offer_sequence_parallelism_under_tensor_parallelism_only():
  config = config_lib.load("experiments/charlm_transformer.py")
  rep = {"parameters": 10 ** 9, "optimizer_state": 2 * 10 ** 9, "temporaries": 0}
  offered = lambda: " ".join(memory.fixes(config, rep, devices=8))  # noqa: E731
  assert "sequence_parallel" not in offered()  # no tensor axis: nothing to add it to
  with config.unlocked():
    config.mesh.tensor = 4
  assert "sharding.sequence_parallel=True" in offered()
  with config.unlocked():
    config.sharding.sequence_parallel = True
  assert "sequence_parallel" not in offered()  # on already
