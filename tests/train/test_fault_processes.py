"""Faults of processes (issue "nothing lost and every error one line"): input workers outliving a
killed trainer, signals in each phase before training, a full disk, a damaged checkpoint, phases
past their watchdog, a hung first step and a missing coordinator. Each asserts the one line, the
exit status and that nothing was lost; most run `python -m train` in fresh interpreters and are
in the slow set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT, run_cli
from tests.train.test_faults import _kill
from train import files


# Another process holding a workdir's lock as a run does (POSIX lock, holder line), until killed.
def _descendants(pid: int) -> set[int]:
  """Live (not zombie) processes below `pid`, from /proc."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if fields[0] != "Z":
        parents[int(entry)] = int(fields[1])
  out, frontier = set(), {pid}
  while frontier:
    frontier = {p for p, parent in parents.items() if parent in frontier} - out
    out |= frontier
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow  # a streaming run with two input workers in a fresh interpreter
def test_input_workers_end_when_the_trainer_is_killed(data_dir, tmp_path):
  trainer = subprocess.Popen(
      [sys.executable, "-m", "train", "--config", "experiments/mnist1d_cnn.py:tiny",
       f"--config.data.data_dir={data_dir}", "--config.data.in_memory=False",
       "--config.data.workers=2", "--config.train.steps=1000000", "--compilation_cache=",
       "--workdir", str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  workers, deadline = set(), time.time() + 180
  while len(workers) < 2 and time.time() < deadline and trainer.poll() is None:
    if os.path.exists(tmp_path / "run" / files.METRICS):  # training: its workers are up
      workers = _descendants(trainer.pid)
    time.sleep(0.2)
  assert len(workers) >= 2, trainer.stderr.read()[-2000:] if trainer.poll() is not None else ""
  _kill(trainer)
  deadline = time.time() + 10
  while any(_alive(p) for p in workers) and time.time() < deadline:
    time.sleep(0.2)
  assert not [p for p in workers if _alive(p)], "input workers outlived their trainer"


@pytest.mark.slow  # python -m train in a fresh interpreter, paused at each phase
@pytest.mark.parametrize("phase,signum", [("compiling", signal.SIGTERM),
                                          ("writing to the workdir", signal.SIGINT),
                                          ("the first step", signal.SIGTERM)])
def test_a_signal_in_each_phase_before_training_stops_with_one_line_and_0(
    phase, signum, data_dir, tmp_path):
  workdir = tmp_path / "run"
  p = subprocess.Popen([sys.executable, "-m", "train", "--config",
                        "experiments/mnist1d_logreg.py:tiny", f"--config.data.data_dir={data_dir}",
                        "--workdir", str(workdir), "--compilation_cache="], cwd=ROOT,
                       env=dict(os.environ, STRATA_TEST_PAUSE_AT=phase),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in p.stderr:
    if line.startswith("paused before"):
      break
  if phase == "the first step":  # SIGUSR1: every thread's stack, to stderr and the workdir
    p.send_signal(signal.SIGUSR1)
    for line in p.stderr:
      if line.startswith("SIGUSR1: every thread's stack written to"):
        break
    (dump,) = [n for n in os.listdir(workdir) if n.startswith("stacks-")]
    assert "Current thread" in (workdir / dump).read_text()
  p.send_signal(signum)
  rest = p.stderr.read()
  assert p.wait(60) == 0, rest[-2000:]
  name = signal.Signals(signum).name
  assert rest.strip().splitlines()[-1] == (f"stopped by {name} before {phase}: nothing to save "
                                           "yet; the same command starts the run again")
  # nothing written before the workdir's phase; after it, no record the resumed run would lose
  assert not workdir.exists() or not (workdir / files.METRICS).exists()
  if phase == "compiling":
    assert not workdir.exists() or os.listdir(workdir) == []


@pytest.mark.slow  # python -m train in fresh interpreters, paused in a phase of training
@pytest.mark.parametrize("phase,stopped_at", [("evaluation", 10), ("a checkpoint", 11)])
def test_a_signal_during_evaluation_or_a_checkpoint_saves_and_resumes(phase, stopped_at, data_dir,
                                                                      tmp_path):
  # evaluation: stopped between two batches of step 10's, saved at 10 with the evaluation
  # pending; a checkpoint: step 10's save completes, the next step boundary saves and stops.
  workdir = tmp_path / "run"
  args = ["--config", "experiments/mnist1d_logreg.py:tiny", f"--config.data.data_dir={data_dir}",
          "--workdir", str(workdir), "--compilation_cache="]
  p = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT,
                       env=dict(os.environ, STRATA_TEST_PAUSE_AT=phase),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in p.stderr:
    if line.startswith("paused before"):
      break
  p.send_signal(signal.SIGTERM)
  rest = p.stderr.read()
  assert p.wait(60) == 0, rest[-2000:]
  assert rest.strip().splitlines()[-1] == (
      f"stopped by SIGTERM at step {stopped_at}: checkpoint {workdir}/{files.CHECKPOINTS}/"
      f"{stopped_at} is complete; the same command resumes from it")
  before = (workdir / files.METRICS).read_text().splitlines()
  assert [json.loads(r)["split"] for r in before] == (
      ["train"] if phase == "evaluation" else ["train", "eval"])  # the cut one is not recorded
  resumed = run_cli(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed from {workdir}/{files.CHECKPOINTS}/{stopped_at}" in resumed.stderr
  after = (workdir / files.METRICS).read_text().splitlines()
  assert after[:len(before)] == before  # nothing lost
  assert [(r["step"], r["split"]) for r in map(json.loads, after)] == [
      (10, "train"), (10, "eval"), (20, "train"), (20, "eval")]


@pytest.mark.slow  # python -m train under a file-size limit, then again without it
def test_a_full_disk_is_one_line_and_the_run_resumes(data_dir, tmp_path):
  import resource

  def small_files():  # writes past 60 kB fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

  workdir = str(tmp_path / "run")
  args = [sys.executable, "-m", "train", "--config", "experiments/mnist1d_cnn.py:tiny",
          f"--config.data.data_dir={data_dir}", "--config.train.steps=200",
          "--config.train.checkpoint_every=10", "--config.train.keep_checkpoints=100",
          "--config.train.log_every=1", "--workdir", workdir, "--compilation_cache="]
  full = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        preexec_fn=small_files)
  lines = full.stderr.strip().splitlines()
  assert full.returncode == 5, full.stderr[-3000:]
  assert lines[-1].startswith(f"error: writing to --workdir={workdir} failed: File too large; "
                              "free space there"), lines[-1]
  assert not [line for line in lines if "Traceback" in line or "File \"" in line]
  with open(os.path.join(workdir, files.METRICS)) as f:
    before = [line for line in f if line.endswith("\n")]
  again = run_cli(args[3:])
  assert again.returncode == 0, again.stderr[-3000:]
  with open(os.path.join(workdir, files.METRICS)) as f:
    after = f.readlines()
  saved = [json.loads(line)["step"] for line in before]
  kept = [line for line in before if json.loads(line)["step"] <= max(saved)]
  assert after[:len(kept)] == kept or after[:len(before)] == before[:len(after)]
  assert json.loads(after[-1])["step"] == 200


@pytest.mark.slow  # two trainings in fresh interpreters
def test_recovering_from_a_damaged_checkpoint_says_so_in_a_few_lines(data_dir, tmp_path):
  args = ["--config", "experiments/mnist1d_logreg.py:tiny", f"--config.data.data_dir={data_dir}",
          "--workdir", str(tmp_path / "run"), "--compilation_cache="]
  assert run_cli(args).returncode == 0
  for root, _, names in os.walk(tmp_path / "run" / files.CHECKPOINTS / "20"):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  r = run_cli(args + ["--config.train.steps=30"])
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stderr.strip().splitlines()
  assert any("checkpoint step 20" in line and "does not restore" in line for line in lines)
  assert f"resumed from {tmp_path}/run/checkpoints/10" in r.stderr
  # orbax's own logged errors and tracebacks ("Event loop is closed", ...) are not shown
  assert not [line for line in lines if "Traceback" in line or "Event loop" in line]
  assert len(lines) < 15, r.stderr


def test_a_phase_past_its_watchdog_ends_in_one_line_with_the_stacks(tmp_path):
  # train/watchdog.py in a bare interpreter: the main thread stuck, the timer fires
  code = textwrap.dedent(f"""
      import time
      from train import watchdog
      with watchdog.Watchdog(0.5, "the first step (process 0 of 1)", {str(tmp_path)!r}):
        time.sleep(30)
      """)
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=60)
  stacks = [f for f in os.listdir(tmp_path) if f.startswith("stacks-")]
  assert r.returncode == 1 and len(stacks) == 1
  assert r.stderr.strip().splitlines() == [
      f"error: the first step (process 0 of 1) did not finish within 0.5 s "
      f"(host {os.uname().nodename}, pid {r.stderr.split('pid ')[1].split(')')[0]}); every "
      f"thread's stack is in {tmp_path / stacks[0]}"]
  assert "time.sleep" not in r.stderr and "line 4" in (tmp_path / stacks[0]).read_text()


@pytest.mark.slow  # two interpreters of python -m train
def test_a_hung_first_step_and_a_missing_coordinator_end_in_one_line_each(tmp_path):
  hung = run_cli(["--config", "experiments/mnist1d_cnn.py:tiny", "--workdir", str(tmp_path / "a"),
                  "--compilation_cache=", "--config.train.first_step_timeout_secs=3"],
                 env_extra={"STRATA_TEST_PAUSE_AT": "the first step"}, timeout=120)
  assert hung.returncode == 1
  assert hung.stderr.strip().splitlines()[-1].startswith(
      "error: the first step (process 0 of 1) did not finish within 3 s (host ")
  assert any(f.startswith("stacks-") for f in os.listdir(tmp_path / "a"))
  alone = run_cli(["--config", "experiments/mnist1d_cnn.py:tiny", "--workdir",
                   str(tmp_path / "b"), "--compilation_cache=", "--num_processes=2",
                   "--coordinator_address=127.0.0.1:47123", "--process_id=1",
                   "--distributed_timeout=3"], timeout=120)
  assert alone.returncode == 1 and alone.stderr.strip().splitlines() == [
      "error: joining the job (process 1 of 2, coordinator 127.0.0.1:47123, "
      f"--distributed_timeout) did not finish within 3 s (host {os.uname().nodename}, pid "
      f"{alone.stderr.split('pid ')[1].split(')')[0]})"]


def test_a_signal_during_a_compile_stops_at_once(tmp_path):
  # train.signals.while_compiling in a bare interpreter: the "compile" (a sleep, which releases
  # the GIL as XLA's compile does) would run 30 s; SIGTERM stops the command within a second.
  code = textwrap.dedent("""
      import sys, time
      from train import signals
      signals.install_early()
      print("compiling", flush=True)
      try:
        signals.while_compiling(lambda: time.sleep(30))
      except signals.Stopped as e:
        print(e, file=sys.stderr)
        sys.exit(0)
      """)
  p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  assert p.stdout.readline() == "compiling\n"
  time.sleep(0.3)
  t = time.monotonic()
  p.send_signal(signal.SIGTERM)
  assert p.wait(10) == 0 and time.monotonic() - t < 3
  assert p.stderr.read().strip().splitlines()[-1] == (
      "stopped by SIGTERM while compiling: nothing to save yet; the same command starts the run "
      "again")


def test_while_compiling_returns_the_result_and_raises_the_error():
  from train import signals
  assert signals.while_compiling(lambda: 42) == 42
  with pytest.raises(ZeroDivisionError):
    signals.while_compiling(lambda: 1 / 0)


@pytest.mark.slow  # two jobs of two processes each, over gloo
def test_a_second_multi_process_job_on_a_workdir_is_refused_on_every_process(data_dir, tmp_path):
  from tests.train.test_loop import _free_port
  from tests.train.test_preemption import _wait_for_record

  workdir = str(tmp_path / "run")
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          "--compilation_cache=", "--config.train.steps=100000", "--config.train.eval_every=0",
          "--config.train.checkpoint_every=0", "--config.train.log_every=50",
          f"--workdir={workdir}", "--num_processes=2"]

  def job() -> list[subprocess.Popen]:
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "train", *args,
                              f"--coordinator_address=localhost:{port}", f"--process_id={i}"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]

  first = job()
  _wait_for_record(workdir, first[0], 50, timeout=300)
  second = job()
  outs = [p.communicate(timeout=120)[1] for p in second]
  lines = [[line for line in out.splitlines() if line.strip()] for out in outs]
  holder = f"is being written by process {first[0].pid} on {os.uname().nodename}"
  # every process of the refused job: one line, status 2, the holder named
  assert [p.returncode for p in second] == [2, 2], [out[-1500:] for out in outs]
  assert len(lines[0]) == 1 and holder in lines[0][0], lines[0]
  assert len(lines[1]) == 1 and holder in lines[1][0], lines[1]
  assert "process 0 of this job was refused it" in lines[1][0]
  with open(os.path.join(workdir, files.METRICS)) as f:
    before = f.read().splitlines()
  first[1].send_signal(signal.SIGTERM)  # the first job saves and stops, its records whole
  outs = [p.communicate(timeout=240)[1] for p in first]
  assert [p.returncode for p in first] == [0, 0], [out[-1500:] for out in outs]
  with open(os.path.join(workdir, files.METRICS)) as f:
    after = f.read().splitlines()
  assert after[:len(before)] == before
  assert [n for n in os.listdir(os.path.join(workdir, files.CHECKPOINTS)) if n.isdigit()]
