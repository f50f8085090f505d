"""`--workdir gs://...` (train/remote_workdir.py) against a local GCS emulator: a run killed with
SIGKILL resumes on another machine (another local copy) from what was uploaded, and its records
are the bytes of an uninterrupted local run; `python -m eval` reports on it and uploads the
report; nothing is written outside the cache; a workdir another run holds is refused in one
line."""

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

ARGS = ["--config", "experiments/mnist1d_cnn.py:tiny", "--config.train.steps=2000",
        "--config.train.checkpoint_every=200", "--config.train.log_every=100",
        "--config.train.eval_every=500"]


def test_a_killed_run_resumes_elsewhere_from_the_bucket_bit_identical(tmp_path, data_dir):
  import fsspec

  from tests.train.gcs_emulator import emulator

  args = ARGS + [f"--config.data.data_dir={data_dir}"]
  straight = run_cli(args + [f"--workdir={tmp_path / 'straight'}"],
                     env_extra={"JAX_PLATFORMS": "cpu"})
  assert straight.returncode == 0, straight.stderr[-2000:]
  with emulator("bucket"):
    fs, _ = fsspec.core.url_to_fs("gs://bucket")
    env = dict(os.environ, JAX_PLATFORMS="cpu", STRATA_SYNC_SECS="0.5",
               STRATA_CACHE=str(tmp_path / "machine_a"))
    proc = subprocess.Popen([sys.executable, "-m", "train", *args, "--workdir=gs://bucket/run"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not fs.exists("bucket/run/checkpoints/400/.uploaded"):
      assert proc.poll() is None and time.time() < deadline, "no checkpoint was uploaded"
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.rsplit("/", 1)[-1]) for p in fs.ls("bucket/run/checkpoints"))
    assert 400 in steps and steps[-1] < 2000  # killed midway
    # a second machine's copy of the killed run, for later
    shutil.copytree(tmp_path / "machine_a", tmp_path / "machine_b")

    # the same machine again: its copy is as new as the bucket or newer, and is kept
    resumed = run_cli(args + ["--workdir=gs://bucket/run"], env_extra={
        "JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "machine_a")})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "was behind the bucket" not in resumed.stderr
    for name in ("metrics.jsonl", "summary.json", "config.json"):
      assert fs.exists(f"bucket/run/{name}")
    assert fs.cat_file("bucket/run/metrics.jsonl") == (
        tmp_path / "straight" / "metrics.jsonl").read_bytes()
    assert json.loads(fs.cat_file("bucket/run/summary.json"))["steps"] == 2000
    # the TensorBoard writer appends to the local copy; its event files go up whole and parse
    if importlib.util.find_spec("tensorboardX"):
      from tensorboardX.proto.event_pb2 import Event

      steps = []
      for path in fs.find("bucket/run/tensorboard"):
        data = fs.cat_file(path)
        while len(data) >= 16:
          n = struct.unpack("<Q", data[:8])[0]
          if len(data) < 16 + n:  # the killed run's last record, cut short (TensorBoard skips it)
            break
          steps.append(Event.FromString(data[12:12 + n]).step)
          data = data[16 + n:]
      assert max(steps) == 2000
    assert not fs.exists("bucket/run/.lock.json")  # released
    assert not os.path.exists(os.path.join(ROOT, "gs:"))
    straight_bytes = (tmp_path / "straight" / "metrics.jsonl").read_bytes()

    # the second machine's copy is behind the bucket now: moved aside, the bucket's run goes on
    longer = run_cli(args + ["--workdir=gs://bucket/run", "--config.train.steps=2200"],
                     env_extra={"JAX_PLATFORMS": "cpu",
                                "STRATA_CACHE": str(tmp_path / "machine_b")})
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "was behind the bucket; moved to" in longer.stderr
    assert "checkpoints/2000" in longer.stderr  # resumed from the bucket's last step
    records = fs.cat_file("bucket/run/metrics.jsonl")
    assert records.startswith(straight_bytes)
    train_steps = [json.loads(line)["step"] for line in records.decode().splitlines()
                   if json.loads(line)["split"] == "train"]
    assert train_steps == list(range(100, 2201, 100))

    # python -m eval on the bucket's run: its report is uploaded beside it
    report = subprocess.run([sys.executable, "-m", "eval", "--workdir=gs://bucket/run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(
                                os.environ, JAX_PLATFORMS="cpu",
                                STRATA_CACHE=str(tmp_path / "machine_c")))
    assert report.returncode == 0, report.stderr[-2000:]
    assert "written to gs://bucket/run/report" in report.stdout
    # the newest step is read as saved: no fallback to its metadata's absence or an older step
    assert "checkpoint step" not in report.stderr, report.stderr[-2000:]
    metrics = json.loads(fs.cat_file("bucket/run/report/metrics.json"))
    assert metrics["checkpoint_step"] == 2200, report.stderr[-2000:]
    final = json.loads(fs.cat_file("bucket/run/summary.json"))["final_eval"]
    assert metrics["metrics"]["accuracy"] == pytest.approx(final["accuracy"]), report.stderr
    assert fs.exists("bucket/run/report/report.md")
    # ... and the other evaluation tools: the run's evaluators, an int8 copy uploaded beside it
    for tool, extra in (("eval.evaluate", []), ("eval.compress", [])):
      r = subprocess.run([sys.executable, "-m", tool, "--workdir=gs://bucket/run", *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(
                             os.environ, JAX_PLATFORMS="cpu",
                             STRATA_CACHE=str(tmp_path / "machine_c")))
      assert r.returncode == 0, (tool, r.stderr[-2000:])
    assert fs.exists("bucket/run/compressed/report.json")

    # a workdir another run holds (a fresh heartbeat) is refused in one line, status 2
    fs.pipe_file("bucket/run/.lock.json", json.dumps(
        {"owner": "other-host:1:abc", "heartbeat": time.time()}).encode())
    held = run_cli(args + ["--workdir=gs://bucket/run", "--config.train.steps=2200"],
                   env_extra={"JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "c")})
    assert held.returncode == 2
    lines = [line for line in held.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "is held by another run (other-host:1:abc" in lines[0]


def test_an_unreachable_bucket_is_one_line_with_status_5(tmp_path):
  r = run_cli(ARGS + ["--workdir=gs://bucket/run"], env_extra={
      "JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "cache"),
      "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "TENSORSTORE_GCS_HTTP_URL": "http://127.0.0.1:9", "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test"})
  assert r.returncode == 5, r.stderr[-2000:]
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "--workdir=gs://bucket/run cannot be read or written" in lines[0]


def test_a_data_dir_in_the_bucket_is_prepared_once_and_downloaded_after(tmp_path):
  import fsspec

  from tests.train.gcs_emulator import emulator

  args = ["--config", "experiments/mnist1d_cnn.py:tiny", "--config.train.steps=20",
          "--config.data.data_dir=gs://bucket/tfds"]
  with emulator("bucket"):
    fs, _ = fsspec.core.url_to_fs("gs://bucket")
    runs = []
    for machine in ("a", "b"):
      r = run_cli(args + [f"--workdir={tmp_path / machine / 'run'}"], env_extra={
          "JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / machine / "cache")})
      assert r.returncode == 0, r.stderr[-2000:]
      runs.append(r.stderr)
    assert "preparing the offline dataset 'mnist1d'" in runs[0]
    assert "data.data_dir=gs://bucket/tfds: uploaded" in runs[0]
    assert "preparing" not in runs[1] and "data.data_dir=gs://bucket/tfds: downloading" in runs[1]
    assert [p for p in fs.find("bucket/tfds") if p.endswith("/dataset_info.json")]
  lineage = [json.loads((tmp_path / m / "run" / "lineage.json").read_text()) for m in "ab"]
  assert lineage[0]["dataset"]["fingerprint"] == lineage[1]["dataset"]["fingerprint"]
