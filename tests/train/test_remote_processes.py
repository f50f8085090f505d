"""A job of two processes on a `gs://` workdir (train/remote_workdir.py `_across_processes`),
against the GCS emulator, each process with its own cache as hosts that share no disk: orbax
writes every process's shards in the bucket; killed (SIGKILL) after a checkpoint and started
again on other "hosts", the job's records are the bytes of an uninterrupted two-process run on a
shared local disk."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.train.test_loop import _free_port

pytestmark = pytest.mark.slow

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

ARGS = ["--config", "experiments/mnist1d_cnn.py:tiny", "--compilation_cache=",
        "--config.train.steps=1200", "--config.train.checkpoint_every=200",
        "--config.train.log_every=100", "--config.train.eval_every=300"]


def _job(args, caches):
  """Starts the two processes of a job; `caches`: each one's STRATA_CACHE (None: unset). No
  periodic upload: the records reach the bucket only before each checkpoint and at the end."""
  port = _free_port()
  procs = []
  for i, cache in enumerate(caches):
    env = dict(os.environ, JAX_PLATFORMS="cpu", STRATA_SYNC_SECS="100000")
    if cache:
      env["STRATA_CACHE"] = str(cache)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "train", *args, f"--coordinator_address=localhost:{port}",
         "--num_processes=2", f"--process_id={i}"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def _finish(procs):
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
  return outs


def test_a_killed_two_process_job_resumes_on_other_hosts_bit_identical(tmp_path, data_dir):
  import fsspec

  from tests.train.gcs_emulator import emulator

  args = ARGS + [f"--config.data.data_dir={data_dir}"]
  _finish(_job(args + [f"--workdir={tmp_path / 'straight'}"], [None, None]))
  straight = (tmp_path / "straight" / "metrics.jsonl").read_bytes()
  with emulator("bucket"):
    fs, _ = fsspec.core.url_to_fs("gs://bucket")
    url = ["--workdir=gs://bucket/run"]
    procs = _job(args + url, [tmp_path / "host_a0", tmp_path / "host_a1"])
    deadline = time.time() + 180
    while not fs.exists("bucket/run/checkpoints/400/commit_success.txt"):
      assert all(p.poll() is None for p in procs) and time.time() < deadline, "no checkpoint"
      time.sleep(0.05)
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
    shards = fs.ls("bucket/run/checkpoints/400/data")
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= {s.rsplit("/", 1)[-1] for s in shards}
    assert not os.path.exists(tmp_path / "host_a0" / "workdirs" / "checkpoints")

    outs = _finish(_job(args + url, [tmp_path / "host_b0", tmp_path / "host_b1"]))
    assert "resumed from" in outs[0]
    assert fs.cat_file("bucket/run/metrics.jsonl") == straight
    assert json.loads(fs.cat_file("bucket/run/summary.json"))["steps"] == 1200
    assert not fs.exists("bucket/run/.lock.json")
    # nothing but records in the hosts' local copies: the checkpoints live in the bucket
    for host in ("host_b0", "host_b1"):
      assert not list((tmp_path / host).rglob("checkpoints"))
    # and the report tools of one process read the job's checkpoints (two processes' shards)
    for tool in ("eval", "eval.evaluate"):
      r = subprocess.run([sys.executable, "-m", tool, *url], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(
                             os.environ, JAX_PLATFORMS="cpu", STRATA_CACHE=str(tmp_path / "c")))
      assert r.returncode == 0, (tool, r.stderr[-2000:])
    assert fs.exists("bucket/run/report/metrics.json")
