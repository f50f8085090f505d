"""The loop end to end on tiny configs: records, determinism, exact resume, devices, failures."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from data import DataError
from tests.conftest import ROOT, load_experiment, run_cli
from train import checkpoint as checkpoint_lib
from train import config as config_lib
from train import loop, resumable


def _tiny(name, data_dir, **overrides):
  c = load_experiment(name, "tiny", data_dir)
  for field, value in overrides.items():
    section, _, key = field.rpartition(".")
    node = c
    for part in section.split(".") if section else []:
      node = node[part]
    node[key] = value
  return c


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.PyTreeCheckpointer().restore(path)["params"]


def _assert_trees_equal(a, b):
  import jax
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_writes_records_and_the_same_seed_repeats_exactly(data_dir, tmp_path):
  runs = []
  for i in range(2):
    wd = str(tmp_path / f"run{i}")
    final = loop.train_and_evaluate(_tiny("mnist1d_cnn", data_dir), wd)
    runs.append(wd)
  assert 0.0 <= final["accuracy"] <= 1.0 and final["count"] == 1000
  for name in ("config.json", "lineage.json", "summary.json", "metrics.jsonl"):
    assert os.path.exists(os.path.join(runs[0], name))
  records = _metrics(runs[0])
  # TensorBoard's events: TFRecord framing (length, its CRC, the Event, its CRC), one event per
  # record of metrics.jsonl, each metric a scalar tagged split/metric
  (name,) = os.listdir(os.path.join(runs[0], "tensorboard"))
  from tensorboardX.proto.event_pb2 import Event

  with open(os.path.join(runs[0], "tensorboard", name), "rb") as f:
    data, events = f.read(), []
  while data:
    n = int.from_bytes(data[:8], "little")
    events.append(Event.FromString(data[12:12 + n]))
    data = data[16 + n:]
  assert events[0].file_version == "brain.Event:2"
  scalars = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in events[1:]]
  assert [step for step, _ in scalars] == [r["step"] for r in records]
  for (_, tags), r in zip(scalars, records):
    for k, v in r.items():
      if k not in ("step", "split"):
        assert tags[f"{r['split']}/{k}"] == pytest.approx(v, rel=1e-6)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [10, 20]
  assert {"loss", "accuracy", "grad_norm", "param_norm", "update_norm",
          "learning_rate"} <= set(train[0])
  assert [r["step"] for r in records if r["split"] == "eval"] == [10, 20]
  lineage = json.load(open(os.path.join(runs[0], "lineage.json")))
  assert len(lineage["dataset"]["fingerprint"]) == 64 and lineage["libraries"]["jax"]
  assert sorted(int(s) for s in os.listdir(os.path.join(runs[0], "checkpoints"))) == [10, 20]
  with open(os.path.join(runs[0], "metrics.jsonl"), "rb") as a, \
       open(os.path.join(runs[1], "metrics.jsonl"), "rb") as b:
    assert a.read() == b.read()


@pytest.mark.slow
@pytest.mark.parametrize("steps,kill_after,data", [
    (3000, 1000, []),
    # Streaming from disk, batches made in 2 worker processes (40 steps an epoch).
    (1200, 420, ["--config.data.in_memory=False", "--config.data.workers=2"])],
    ids=["in_memory", "streaming_2_workers"])
def test_sigkill_half_way_then_resume_ends_bit_identical(data_dir, tmp_path, steps, kill_after,
                                                         data):
  args = ["--config", "experiments/mnist1d_mlp.py:tiny", f"--config.data.data_dir={data_dir}",
          f"--config.train.steps={steps}", "--config.train.checkpoint_every=20",
          "--config.train.log_every=100", "--config.train.eval_every=0",
          "--config.model.widths=(32,)", "--config.data.augment.noise_std=0.1",
          "--config.data.device_prefetch=2", *data]  # batches buffered ahead (CPU's default: 0)
  straight = str(tmp_path / "straight")
  r = run_cli(args + [f"--workdir={straight}"])
  assert r.returncode == 0, r.stderr[-2000:]

  killed = str(tmp_path / "killed")
  proc = subprocess.Popen([sys.executable, "-m", "train", *args, f"--workdir={killed}"],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpts) and any(s.isdigit() and int(s) >= kill_after
                                    for s in os.listdir(ckpts)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  done = [int(s) for s in os.listdir(ckpts) if s.isdigit()]
  assert max(done) < steps

  r = run_cli(args + [f"--workdir={killed}"])
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from" in r.stderr
  resumed = json.load(open(os.path.join(killed, "summary.json")))["resumed_from"]
  assert resumed >= kill_after, resumed
  _assert_trees_equal(_params(killed, steps), _params(straight, steps))
  assert _metrics(killed) == _metrics(straight)


@pytest.mark.slow
def test_fsdp_on_eight_devices_gives_the_one_device_curve_and_resumes_on_other_meshes(
    data_dir, tmp_path):
  """One device for 20 steps, against: 8 devices with fsdp=8 for 10 steps, then that checkpoint
  resumed for 10 more on 4 devices with fsdp=4, and on 1 device. With sharded parameters the
  contractions reduce in another order, and the float rounding differences grow with training
  (0.23% of the loss by step 10, 0.36% by step 20 measured), so the tolerance is 1%."""
  def run(wd, devices, fsdp, steps, *extra):
    r = run_cli(["--config", "experiments/mnist1d_resnet.py:tiny", *extra,
                 f"--config.data.data_dir={data_dir}", "--config.data.batch_size=64",
                 "--config.data.eval_batch_size=200", "--config.train.log_every=1",
                 f"--config.train.steps={steps}", "--config.train.eval_every=10",
                 "--config.train.checkpoint_every=10", f"--config.mesh.fsdp={fsdp}",
                 f"--workdir={wd}"],
                env_extra={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.load(open(os.path.join(wd, "lineage.json")))["devices"] == devices

  def losses(wd):
    return [m["loss"] for m in _metrics(wd) if m["split"] == "train"]

  one, sharded = str(tmp_path / "one"), str(tmp_path / "fsdp8")
  run(one, 1, 1, 20)
  run(sharded, 8, 8, 10)
  # the tiny model's arrays are all below parallel.FSDP_MIN_SIZE (replicated); with widths 32-64
  # its kernels (3 x 32 x 64 and up) are sharded: each of the 8 devices holds 1/8 of every
  # sharded array and all of the small ones
  wide = str(tmp_path / "wide")
  run(wide, 8, 8, 2, "--config.model.widths=(32,64)")
  layout = json.load(open(os.path.join(wide, "summary.json")))["parameter_bytes"]
  assert layout["sharded"] > 0.5 * layout["total"]
  assert layout["per_device"] == layout["sharded"] // 8 + layout["replicated"]
  layout = json.load(open(os.path.join(sharded, "summary.json")))["parameter_bytes"]
  np.testing.assert_allclose(losses(sharded), losses(one)[:10], rtol=1e-2)
  for devices, fsdp in ((4, 4), (1, 1)):
    wd = str(tmp_path / f"resumed{devices}")
    shutil.copytree(sharded, wd)
    run(wd, devices, fsdp, 20)
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert summary["resumed_from"] == 10
    assert summary["parameter_bytes"]["total"] == layout["total"]
    np.testing.assert_allclose(losses(wd), losses(one), rtol=1e-2)
    ev = [m["loss"] for m in _metrics(wd) if m["split"] == "eval"]
    np.testing.assert_allclose(ev, [m["loss"] for m in _metrics(one) if m["split"] == "eval"],
                               rtol=1e-2)


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoints(data_dir, tmp_path):
  wd = str(tmp_path / "nan")
  # The learning rate jumps from 1e-2 to 1e28 at step 15: the MLP's logits overflow.
  c = _tiny("mnist1d_mlp", data_dir, **{"train.steps": 30, "train.log_every": 5,
                                        "optim.schedule": "step", "optim.step_boundaries": (0.5,),
                                        "optim.step_factor": 1e30})
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 1[6-9].*last good checkpoint is "
                     r"step 10"):
    loop.train_and_evaluate(c, wd)
  assert sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))) == [10]
  _params(wd, 10)  # still restorable


def _corrupt(path):
  for root, _, files in os.walk(path):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"\x00garbage")


def test_corrupt_checkpoint_falls_back_and_half_written_is_ignored(data_dir, tmp_path):
  wd = str(tmp_path / "c")
  loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir), wd)  # checkpoints 10, 20
  _corrupt(os.path.join(wd, "checkpoints", "20"))
  os.makedirs(os.path.join(wd, "checkpoints", "25.orbax-checkpoint-tmp-1"))  # half-written
  loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir, **{"train.steps": 30}), wd)
  assert json.load(open(os.path.join(wd, "summary.json")))["resumed_from"] == 10
  moved = os.listdir(os.path.join(wd, "checkpoints_corrupt"))
  assert len(moved) == 1 and moved[0].startswith("20-")  # moved aside, not deleted
  steps = sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())
  assert steps[-1] == 30

  wd2 = str(tmp_path / "all_bad")
  loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir), wd2)
  for s in ("10", "20"):
    _corrupt(os.path.join(wd2, "checkpoints", s))
  longer = _tiny("mnist1d_logreg", data_dir, **{"train.steps": 30})  # a finished run is a no-op
  with pytest.raises(checkpoint_lib.CheckpointError, match=r"no checkpoint .* could be restored"
                     r"(.|\n)*step 20(.|\n)*step 10"):
    loop.train_and_evaluate(longer, wd2)
  # nothing to continue from: starting over would overwrite the records, so it is refused, and
  # --restart moves them aside, not deleting anything
  metrics = open(os.path.join(wd2, "metrics.jsonl")).read()
  with pytest.raises(config_lib.ConfigError, match=r"holds the records of an earlier start "
                     r"\(metrics.jsonl up to step 20\) but no checkpoint to continue them from: "
                     r"checkpoints/ holds no step \(its damaged steps were moved to .*"
                     r"checkpoints_corrupt\).*pass --restart"):
    loop.train_and_evaluate(longer, wd2)
  assert open(os.path.join(wd2, "metrics.jsonl")).read() == metrics
  loop.train_and_evaluate(longer, wd2, restart=True)
  (aside,) = [n for n in os.listdir(wd2) if n.startswith("restarted-")]
  assert open(os.path.join(wd2, aside, "metrics.jsonl")).read() == metrics
  assert os.path.isdir(os.path.join(wd2, aside, "checkpoints_corrupt"))
  assert json.load(open(os.path.join(wd2, "summary.json")))["resumed_from"] == 0


def test_resuming_with_a_different_config_is_refused(data_dir, tmp_path):
  wd = str(tmp_path / "r")
  loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir), wd)
  with pytest.raises(config_lib.ConfigError, match=r"optim.learning_rate: 0.01 -> 0.5"):
    loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir, **{"optim.learning_rate": 0.5}),
                            wd)


def test_a_field_added_since_the_run_started_is_no_change_at_its_default(data_dir, tmp_path):
  config = _tiny("mnist1d_logreg", data_dir)
  saved = json.loads(config.to_json_best_effort())
  del saved["distill"]  # a run written before the section existed
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert resumable.config_changes(str(tmp_path), config) == {}
  with config.unlocked():
    config.distill.temperature = 3.0
  assert resumable.config_changes(str(tmp_path), config) == {"distill.temperature": (None, 3.0)}


@pytest.mark.parametrize("overrides,error,match", [
    ({"model.num_classes": 5}, DataError, r"label 9 is out of range for num_classes=5"),
    ({"data.batch_size": 5000}, DataError, r"data.batch_size=5000 is larger than the 'train'"),
    ({"data.source": "nope"}, DataError, r"data.source='nope' is neither"),
    ({"model.name": "cnn.Nope"}, ValueError, r"model.name='cnn.Nope'"),
])
def test_bad_inputs_fail_before_training_with_clear_errors(data_dir, tmp_path, overrides, error,
                                                            match):
  wd = str(tmp_path / "e")
  with pytest.raises(error, match=match):
    loop.train_and_evaluate(_tiny("mnist1d_logreg", data_dir, **overrides), wd)
  assert not os.path.exists(os.path.join(wd, "checkpoints"))


@pytest.mark.slow
def test_compilation_cache_is_filled_then_reused_with_identical_results(data_dir, tmp_path):
  cache = tmp_path / "xla"
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          f"--compilation_cache={cache}"]
  for i in range(2):
    # XLA's own flags, as a user's run has them: under the suite's fast-compiling ones
    # (tests/conftest.py) the tiny step compiles in under the cache's 0.2 s and is not stored
    r = run_cli(args + [f"--workdir={tmp_path / f'run{i}'}"], env_extra={"XLA_FLAGS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    if i == 0:
      entries = sorted(os.listdir(cache))
      assert any(e.startswith("jit_step") for e in entries), entries
  # The second run found the step under the same key. Only functions that compiled in more
  # than the cache's 0.2 s threshold are stored, so under a loaded CPU the second run may add
  # an entry for a small one that compiled faster the first time; none may change or vanish.
  after = sorted(os.listdir(cache))
  assert set(entries) <= set(after), (entries, after)
  steps = lambda names: [e for e in names if e.startswith("jit_step")]  # noqa: E731
  assert steps(after) == steps(entries), (entries, after)
  assert _metrics(str(tmp_path / "run0")) == _metrics(str(tmp_path / "run1"))


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _read_json(workdir: str, name: str) -> dict:
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def _two_processes(args: list[str]) -> None:
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "train", *args,
                             f"--coordinator_address=localhost:{port}", "--num_processes=2",
                             f"--process_id={i}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  for i, p in enumerate(procs):
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, f"process {i}:\n{out[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("data", [[], ["--config.data.in_memory=False"]],
                         ids=["in_memory", "streaming"])
def test_two_processes_over_gloo_match_one_process_and_resume(data_dir, tmp_path, data):
  # Each process loads half of every global batch; gradients are all-reduced across processes
  # over gloo; checkpoints (train state + each process's iterator) restore in both. Evaluation
  # counts each of the 1,000 test examples once across the processes.
  base = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          "--compilation_cache=", *data]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  r = run_cli(base + ["--config.train.steps=30", f"--workdir={one}"])
  assert r.returncode == 0, r.stderr[-2000:]
  _two_processes(base + ["--config.train.steps=20", f"--workdir={two}"])
  assert _read_json(two, "lineage.json")["processes"] == 2
  _two_processes(base + ["--config.train.steps=30", f"--workdir={two}"])
  assert _read_json(two, "summary.json")["resumed_from"] == 20
  a, b = _metrics(one), _metrics(two)
  assert [(m["step"], m["split"]) for m in a] == [(m["step"], m["split"]) for m in b]
  assert [m["count"] for m in b if m["split"] == "eval"] == [1000.0] * 3
  for x, y in zip(a, b):
    for k in set(x) - {"step", "split"}:
      np.testing.assert_allclose(y[k], x[k], rtol=1e-5, atol=1e-6, err_msg=f"{x['step']} {k}")
