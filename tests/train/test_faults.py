"""Faults and bad inputs (issue "nothing lost and every error one line"): one writer per workdir,
the exit-code contract, paths that cannot be workdirs, files that cannot be read. Each asserts
the one line, the exit status and that nothing was written or lost. The subprocess trainings
are in the slow set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT, load_experiment, run_cli
from train import files, loop, workdir_lock
from train.errors import CheckpointError, ConfigError

# Another process holding a workdir's lock as a run does (POSIX lock, holder line), until killed.
HOLDER = textwrap.dedent("""
    import fcntl, json, os, socket, sys, time
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "time": time.time(), "command": "holder"}).encode())
    print("held", flush=True)
    time.sleep(120)
""")


def _hold(workdir: str) -> subprocess.Popen:
  os.makedirs(workdir, exist_ok=True)
  p = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == "held"
  return p


def _kill(p: subprocess.Popen) -> None:
  p.send_signal(signal.SIGKILL)
  p.wait(10)


def test_a_held_workdir_is_refused_before_anything_is_compiled_or_written(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  holder = _hold(workdir)
  try:
    c = load_experiment("mnist1d_mlp", "tiny", data_dir)
    compiled = []
    original = loop.compile_train_step
    loop.compile_train_step = lambda run: compiled.append(run) or original(run)
    try:
      with pytest.raises(workdir_lock.WorkdirBusy,
                         match=rf"--workdir={workdir} is being written by process {holder.pid} "
                               r"on .* \(since .*: holder\); wait for it to end"):
        loop.train_and_evaluate(c, workdir)
    finally:
      loop.compile_train_step = original
    assert not compiled and os.listdir(workdir) == [workdir_lock.LOCK]
    # a tool writing into the workdir is refused too; one writing elsewhere is not
    with pytest.raises(workdir_lock.WorkdirBusy, match="write elsewhere with --out"):
      with workdir_lock.writing_into(workdir, os.path.join(workdir, "report")):
        pass
    with workdir_lock.writing_into(workdir, str(tmp_path / "elsewhere")):
      pass
  finally:
    _kill(holder)
  # the kernel released the dead holder's lock: the workdir is free at once
  workdir_lock.acquire(workdir)
  assert workdir_lock.holder(workdir)["pid"] == os.getpid()
  workdir_lock.acquire(workdir)  # re-entrant in the holding process
  workdir_lock.release(workdir)
  workdir_lock.release(workdir)


def test_a_failed_start_in_a_new_workdir_leaves_nothing(data_dir, tmp_path):
  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  with c.unlocked():
    c.train.memory_limit_gb = 1e-6  # refused after compiling, before writing
  with pytest.raises(Exception, match="memory"):
    loop.train_and_evaluate(c, str(tmp_path / "new"))
  assert not os.path.exists(tmp_path / "new")


@pytest.mark.parametrize("make,field,message", [
    (lambda p: "gs://bucket/run", "--workdir", "this tool reads and writes local paths"),
    (lambda p: (p / "f").write_text("x") and str(p / "f"), "--workdir",
     "is a file; expected a directory"),
])
def test_workdirs_that_are_not_local_directories(make, field, message, data_dir, tmp_path):
  path = make(tmp_path)
  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  with pytest.raises(ConfigError, match=rf"{field}='{path}'.*{message}"):
    loop.train_and_evaluate(c, path)
  assert not os.path.exists("gs:")


def test_a_data_dir_url_no_file_system_opens_is_one_line(data_dir):
  from data.sources import DataError

  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  with c.unlocked():
    c.data.data_dir = "nosuchscheme://bucket/tfds"
  with pytest.raises(DataError, match="data.data_dir='nosuchscheme://bucket/tfds': .*nosuchscheme"):
    loop.prepare(c)


def test_a_corrupt_config_json_is_named(data_dir, tmp_path):
  (tmp_path / files.CONFIG).write_text('{"seed": 0, "data": {')
  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  with pytest.raises(CheckpointError, match=rf"{tmp_path}/config.json cannot be read as JSON"):
    loop.train_and_evaluate(c, str(tmp_path))


def test_exit_statuses_follow_the_contract():
  from absl import flags

  import arch
  from data.sources import DataError
  from train import cli
  from train.errors import FlagError, NonFiniteLossError, NoRunError

  cases = {ConfigError("x"): 2, FlagError("x"): 2, workdir_lock.WorkdirBusy("x"): 2,
           NoRunError("x"): 2, arch.ModelConfigError("x"): 2, flags.Error("x"): 2,
           DataError("x"): 3, NonFiniteLossError("x"): 4, CheckpointError("x"): 5,
           OSError(28, "No space left on device"): 5, ValueError("x"): 1, ImportError("x"): 1}
  assert {type(e).__name__: cli.status_of(e) for e in cases} == {
      type(e).__name__: s for e, s in cases.items()}


@pytest.mark.slow  # two trainings in fresh interpreters
def test_two_runs_on_one_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", "--workdir", workdir,
          "--config.train.steps=4000", "--compilation_cache="]
  first = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  while not workdir_lock.holder(workdir) and time.time() < deadline:
    time.sleep(0.2)
  second = run_cli(args)
  lines = [line for line in second.stderr.splitlines() if line.strip()]
  assert second.returncode == 2, second.stderr[-2000:]
  assert lines == [f"error: --workdir={workdir} is being written by process {first.pid} on "
                   f"{os.uname().nodename}" + lines[0].split(os.uname().nodename, 1)[1]]
  out, _ = first.communicate(timeout=300)
  assert first.returncode == 0, out[-2000:]
  with open(os.path.join(workdir, files.METRICS)) as f:
    records = [json.loads(line) for line in f]
  assert records[-1]["step"] == 4000 and os.path.exists(os.path.join(workdir, files.SUMMARY))
  # a SIGKILLed holder leaves no stale lock: the next run takes the workdir at once
  killed = subprocess.Popen([sys.executable, "-m", "train", *args,
                             "--config.train.steps=100000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while workdir_lock.holder(workdir).get("pid") != killed.pid and time.time() < deadline:
    time.sleep(0.2)
  _kill(killed)
  workdir_lock.acquire(workdir)
  workdir_lock.release(workdir)


def _logreg(data_dir, steps=20):
  c = load_experiment("mnist1d_logreg", "tiny", data_dir)  # checkpoints every 10 steps
  c.train.steps = steps
  return c


def _files(workdir: str) -> dict[str, bytes]:
  return {n: open(os.path.join(workdir, n), "rb").read()
          for n in (files.METRICS, files.SUMMARY, files.CONFIG, files.LINEAGE)}


def test_records_are_never_overwritten_or_lost(data_dir, tmp_path, capsys):
  wd = str(tmp_path / "run")
  first = loop.train_and_evaluate(_logreg(data_dir), wd)
  before = _files(wd)
  # a finished run run again: a no-op that says so, every file as it was
  assert loop.train_and_evaluate(_logreg(data_dir), wd) == first
  assert "holds a finished run (20 steps, summary.json); nothing to do" in capsys.readouterr().err
  assert _files(wd) == before
  # a torn last line (a kill mid-write) is dropped with one line; the records before it stay
  with open(os.path.join(wd, files.METRICS), "ab") as f:
    f.write(b'{"step": 25, "split": "tr')
  loop.train_and_evaluate(_logreg(data_dir, 30), wd)
  assert "dropped its unfinished last line (25 bytes" in capsys.readouterr().err
  after = open(os.path.join(wd, files.METRICS), "rb").read()
  assert after.startswith(before[files.METRICS]) and b'"tr\n' not in after
  # lineage.json gains the resumed segment, the first one kept
  with open(os.path.join(wd, files.LINEAGE)) as f:
    doc = json.load(f)
  assert [s["from_step"] for s in doc["segments"]] == [0, 20] and doc["from_step"] == 20
  assert doc["segments"][0] == json.loads(before[files.LINEAGE])["segments"][0]
  # metrics.jsonl deleted: resuming would leave steps unrecorded
  os.rename(os.path.join(wd, files.METRICS), str(tmp_path / "kept.jsonl"))
  with pytest.raises(ConfigError, match=r"has checkpoints up to step 30 but metrics.jsonl holds "
                                        r"no records \(deleted\?\).*put the file back"):
    loop.train_and_evaluate(_logreg(data_dir, 40), wd)
  os.rename(str(tmp_path / "kept.jsonl"), os.path.join(wd, files.METRICS))
  # checkpoints/ gone: starting over would overwrite the records
  os.rename(os.path.join(wd, files.CHECKPOINTS), str(tmp_path / "ckpt"))
  records = open(os.path.join(wd, files.METRICS), "rb").read()
  with pytest.raises(ConfigError, match=r"metrics.jsonl up to step 30\) but no checkpoint to "
                                        r"continue them from: checkpoints/ is missing"):
    loop.train_and_evaluate(_logreg(data_dir, 40), wd)
  assert open(os.path.join(wd, files.METRICS), "rb").read() == records


def test_a_torn_line_before_the_last_is_named(tmp_path):
  from train import metric_writer

  (tmp_path / files.METRICS).write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl\n'
                                        '{"step": 3, "split": "train"}\n')
  with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2, is not a JSON record"):
    metric_writer.read_metrics(str(tmp_path), "train")



@pytest.mark.parametrize("text,message", [
    ("def get_config(:\n", r"bad\.py, line 1: invalid syntax"),
    ("def get_config():\n  return 1 / 0\n",
     r"ZeroDivisionError: division by zero \(at .*bad\.py, line 2; STRATA_TRACEBACK=1"),
    ("def get_config():\n  return {'seed': 0}\n",
     r"get_config returned a dict; expected an ml_collections.ConfigDict"),
])
def test_an_experiment_file_that_fails_is_one_line(text, message, tmp_path):
  from train import config as config_lib

  (tmp_path / "bad.py").write_text(text)
  with pytest.raises(ConfigError, match=rf"--config={tmp_path}/bad.py: .*{message}"):
    config_lib.load(str(tmp_path / "bad.py"))


def test_a_search_storage_that_is_no_database_url_is_one_line(data_dir, tmp_path):
  from experiments import search_study

  s = search_study.Search(config=load_experiment("mnist1d_logreg", "tiny", data_dir),
                          config_arg="experiments/mnist1d_logreg.py:tiny",
                          space="optim.learning_rate=[0.1,0.2]", workdir=str(tmp_path),
                          metric="accuracy",
                          storage="foo://x")
  with pytest.raises(ConfigError, match=r"--storage='foo://x': .*expected an SQLAlchemy URL"):
    search_study.open_study(s)


def test_a_data_dir_that_cannot_be_used_is_named(tmp_path):
  from data import sources
  from data.sources import DataError
  from train import config as config_lib

  (tmp_path / "file").write_text("x")
  d = config_lib.base().data
  d.source, d.data_dir = "digits", str(tmp_path / "file" / "tfds")
  with pytest.raises(DataError, match=rf"data.data_dir='{tmp_path}/file/tfds' .*cannot prepare "
                                      r"or read data.source='digits' there: Not a directory"):
    sources.source_info(d)


def test_a_damaged_data_file_is_named(tmp_path):
  import glob

  import data as data_lib
  from data import sources
  from data.sources import DataError
  from train import config as config_lib

  d = config_lib.base().data
  d.source, d.data_dir = "digits", str(tmp_path)
  sources.source_info(d)
  (shard,) = glob.glob(f"{tmp_path}/**/*-train.array_record*", recursive=True)
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)  # a copy cut short
  sources.clear_caches()
  try:
    with pytest.raises(DataError, match=r"split 'train' of strata_digits/1.0.0 in .* cannot be "
                                        r"read: Corrupted Riegeli.*delete that folder"):
      next(data_lib.build_pipeline(d, "train", train=True, seed=0).iterator())
  finally:
    sources.clear_caches()


def test_a_url_workdir_without_gcsfs_names_the_extra():
  import importlib.util

  if importlib.util.find_spec("gcsfs") is not None:
    pytest.skip("gcsfs is installed (the objectstore extra)")
  from train import remote_workdir

  with pytest.raises(ConfigError, match=r"pip install -e '\.\[objectstore\]'"):
    with remote_workdir.local_workdir("gs://bucket/run"):
      pass
