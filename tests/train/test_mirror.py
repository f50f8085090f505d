"""The local copy of a workdir in object storage (train/remote_workdir.py) on `file://` URLs, which
run the same mirror as `gs://` without an emulator: what a download takes from a tree of runs (a
sweep), and a run and a sweep that upload as they go."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, run_cli
from train import object_lock, workdir_mirror


def _put(root, rel, data=b"x"):
  path = root / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def test_a_download_takes_only_the_steps_uploaded_whole_in_every_checkpoints_folder(tmp_path):
  bucket = tmp_path / "bucket" / "sweep"
  for run in ("lr=0.1/seed_0", "lr=0.2/seed_0"):
    _put(bucket, f"{run}/metrics.jsonl", b'{"step": 10}\n')
    _put(bucket, f"{run}/checkpoints/10/state/x")
    _put(bucket, f"{run}/checkpoints/10/{workdir_mirror.MARKER}", b"")
    _put(bucket, f"{run}/checkpoints/20/state/x")  # its upload did not finish: no marker
    _put(bucket, f"{run}/checkpoints/30.orbax-checkpoint-tmp-1/x")  # orbax's work in progress
  _put(bucket, "results.md", b"| table |")
  mirror = workdir_mirror.Mirror(f"file://{bucket}", local=str(tmp_path / "copy"))
  mirror.pull()
  got = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*")
               if p.is_file())
  assert got == ["lr=0.1/seed_0/checkpoints/10/state/x", "lr=0.1/seed_0/metrics.jsonl",
                 "lr=0.2/seed_0/checkpoints/10/state/x", "lr=0.2/seed_0/metrics.jsonl",
                 "results.md"]

  # a local copy behind the bucket in one of its runs is moved aside
  _put(bucket, "lr=0.2/seed_0/checkpoints/20/" + workdir_mirror.MARKER, b"")
  again = workdir_mirror.Mirror(f"file://{bucket}", local=str(tmp_path / "copy"))
  again.pull()
  assert (tmp_path / "copy" / "lr=0.2/seed_0/checkpoints/20/state/x").exists()
  assert len(list(tmp_path.glob("copy.stale-*"))) == 1


def test_an_upload_sends_each_runs_steps_with_their_markers_and_no_local_lock(tmp_path):
  mirror = workdir_mirror.Mirror(f"file://{tmp_path}/bucket", local=str(tmp_path / "copy"))
  mirror.lock.acquire()
  copy = tmp_path / "copy"
  _put(copy, "a/checkpoints/5/state/x")
  _put(copy, "a/checkpoints/7.orbax-checkpoint-tmp-2/x")
  _put(copy, "a/.lock")
  _put(copy, "a/metrics.jsonl")
  mirror.push()
  bucket = tmp_path / "bucket"
  assert (bucket / "a/checkpoints/5" / workdir_mirror.MARKER).exists()
  assert not (bucket / "a/.lock").exists()
  assert not (bucket / "a/checkpoints/7.orbax-checkpoint-tmp-2").exists()
  # a step orbax deleted locally (train.keep_checkpoints) goes from the bucket too
  os.rename(copy / "a/checkpoints/5", copy / "a/checkpoints/9")
  mirror.push()
  assert not (bucket / "a/checkpoints/5").exists()
  assert (bucket / "a/checkpoints/9" / workdir_mirror.MARKER).exists()
  mirror.lock.release()


def test_a_run_on_a_file_url_trains_uploads_and_releases(tmp_path, data_dir):
  r = run_cli(["--config", "experiments/mnist1d_cnn.py:tiny", "--config.train.steps=60",
               f"--config.data.data_dir={data_dir}", f"--workdir=file://{tmp_path}/bucket/run"],
              env_extra={"JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "cache")})
  assert r.returncode == 0, r.stderr[-2000:]
  run = tmp_path / "bucket" / "run"
  assert (run / "checkpoints" / "60" / workdir_mirror.MARKER).exists()
  assert json.loads((run / "summary.json").read_text())["steps"] == 60
  assert not (run / object_lock.KEY).exists()
  assert not os.path.exists(os.path.join(ROOT, "file:"))


def test_a_sweep_on_a_url_uploads_its_runs_and_another_machine_finds_them_done(tmp_path,
                                                                                data_dir):
  command = [sys.executable, "-m", "experiments.sweep", "--config",
             "experiments/mnist1d_logreg.py:tiny", "--sweep", "optim.learning_rate=[0.01,0.001]",
             f"--config.data.data_dir={data_dir}", "--config.train.steps=40",
             "--compilation_cache=", f"--workdir=file://{tmp_path}/bucket/sweep"]
  for machine in ("a", "b"):
    r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu",
                                STRATA_CACHE=str(tmp_path / machine)))
    assert r.returncode == 0, r.stderr[-2000:]
  assert "ran 0, skipped 2 finished" in r.stderr  # machine b downloaded both finished runs
  sweep = tmp_path / "bucket" / "sweep"
  assert len((sweep / "results.csv").read_text().splitlines()) == 3
  for lr in ("0.01", "0.001"):
    run = sweep / f"optim.learning_rate={lr}" / "seed_0"
    assert (run / "checkpoints" / "40" / workdir_mirror.MARKER).exists()
    assert not (run / ".lock").exists()
  assert not (sweep / object_lock.KEY).exists()


def test_a_step_orbax_committed_in_the_bucket_is_whole_its_items_commit_files_are_not(tmp_path):
  bucket = tmp_path / "bucket"
  _put(bucket, "checkpoints/10/state/x")
  _put(bucket, "checkpoints/10/state/commit_success.txt")  # an item's, not the step's
  _put(bucket, "checkpoints/20/state/x")
  _put(bucket, "checkpoints/20/state/commit_success.txt")
  _put(bucket, "checkpoints/20/commit_success.txt")  # orbax's last file of the step
  mirror = workdir_mirror.Mirror(f"file://{bucket}", local=str(tmp_path / "copy"))
  mirror.pull()
  assert not (tmp_path / "copy" / "checkpoints" / "10").exists()
  assert (tmp_path / "copy" / "checkpoints" / "20" / "state" / "x").exists()


def test_checkpoints_in_the_bucket_for_one_process_resume_on_another_machine(tmp_path, data_dir):
  """`STRATA_CHECKPOINTS_IN_BUCKET=1`: orbax writes the checkpoints in the bucket itself (a
  file:// bucket is a local path to orbax), the local copy holds the records only."""
  args = ["--config", "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
          f"--workdir=file://{tmp_path}/bucket/run"]
  for machine, steps in (("a", 40), ("b", 60)):
    r = run_cli(args + [f"--config.train.steps={steps}"], env_extra={
        "JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / machine),
        "STRATA_CHECKPOINTS_IN_BUCKET": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((tmp_path / machine).rglob("checkpoints"))
  assert "resumed from" in r.stderr
  run = tmp_path / "bucket" / "run"
  assert (run / "checkpoints" / "60" / "commit_success.txt").exists()
  assert not (run / "checkpoints" / "60" / workdir_mirror.MARKER).exists()  # orbax's, not ours
  assert json.loads((run / "summary.json").read_text())["steps"] == 60
  restart = run_cli(args + ["--config.train.steps=60", "--restart"], env_extra={
      "JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "c"),
      "STRATA_CHECKPOINTS_IN_BUCKET": "1"})
  assert restart.returncode == 2 and "cannot be moved aside with the records" in restart.stderr
