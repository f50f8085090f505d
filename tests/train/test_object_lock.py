"""The lock object of a workdir in object storage (train/object_lock.py) under real generation
preconditions: TensorStore's `file` key-value store honours `if_equal` as GCS honours
`ifGenerationMatch` (the GCS emulator the slow tests use ignores preconditions), and the lock's
code is the same for both."""

import json
import os
import subprocess
import sys
import time

import pytest

from train import object_lock, workdir_mirror
from train.errors import ConfigError


def test_of_two_runs_that_both_saw_no_lock_only_one_takes_it(tmp_path):
  url = f"file://{tmp_path}/run"
  a, b = object_lock.ObjectLock(url), object_lock.ObjectLock(url)
  (_, seen_a), (_, seen_b) = a._read(), b._read()  # both read "absent" ...
  assert a._write(seen_a)                           # ... the first write creates it ...
  assert not b._write(seen_b)                       # ... and the second is refused
  assert json.loads((tmp_path / "run" / object_lock.KEY).read_bytes())["owner"] == a.owner

  # acquire itself, with the other run's write landing between its read and its write
  c = object_lock.ObjectLock(url)
  reads = iter([(None, seen_b)])
  c._read = lambda: next(reads, None) or object_lock.ObjectLock._read(c)
  with pytest.raises(ConfigError, match=f"is held by another run \\({a.owner}"):
    c.acquire()


def test_an_expired_lock_is_taken_over_and_its_old_holder_learns_it(tmp_path, monkeypatch):
  url = f"file://{tmp_path}/run"
  a, b = object_lock.ObjectLock(url), object_lock.ObjectLock(url)
  a.acquire()
  with pytest.raises(ConfigError, match="heartbeat 0 s ago"):
    b.acquire()
  a.renew()  # the heartbeat, under a's own generation
  monkeypatch.setattr(object_lock, "EXPIRY_SECS", 0.0)  # a's heartbeat is now too old
  b.acquire()
  with pytest.raises(object_lock.LockLost, match=f"another run \\({b.owner}\\) took over"):
    a.renew()
  a.release()  # a no longer holds it: b's lock stays
  assert json.loads((tmp_path / "run" / object_lock.KEY).read_bytes())["owner"] == b.owner
  b.release()
  assert not (tmp_path / "run" / object_lock.KEY).exists()


def test_a_dead_process_lock_on_this_host_is_taken_over_at_once(tmp_path):
  url = f"file://{tmp_path}/run"
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True).stdout.strip()
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / object_lock.KEY).write_text(json.dumps(
      {"owner": f"{os.uname().nodename}:{dead}:x", "heartbeat": time.time()}))
  lock = object_lock.ObjectLock(url)
  lock.acquire()
  assert json.loads((tmp_path / "run" / object_lock.KEY).read_bytes())["owner"] == lock.owner


def test_a_run_whose_lock_was_taken_over_uploads_nothing_more(tmp_path, monkeypatch):
  url = f"file://{tmp_path}/bucket/run"
  mirror = workdir_mirror.Mirror(url, local=str(tmp_path / "copy"))
  mirror.lock.acquire()
  os.makedirs(mirror.local)
  (tmp_path / "copy" / "metrics.jsonl").write_text('{"step": 1}\n')
  mirror.push()
  assert (tmp_path / "bucket" / "run" / "metrics.jsonl").exists()
  monkeypatch.setattr(object_lock, "EXPIRY_SECS", 0.0)
  object_lock.ObjectLock(url).acquire()  # another machine takes the workdir over
  (tmp_path / "copy" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
  with pytest.raises(object_lock.LockLost):
    mirror.push()
  assert (tmp_path / "bucket" / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_a_scheme_without_a_key_value_store_is_one_line():
  with pytest.raises(ConfigError, match="needs a TensorStore key-value store for this scheme"):
    object_lock.ObjectLock("foo://bucket/run")



def test_a_heartbeat_whose_answer_was_lost_keeps_the_lock(tmp_path):
  lock = object_lock.ObjectLock(f"file://{tmp_path}/run")
  lock.acquire()
  before = lock._generation
  assert lock._write(before)  # a heartbeat that landed ...
  lock._generation = before   # ... but whose answer this run never read
  lock.renew()                # the lock is its own still: renewed under the generation read
  assert lock._generation != before
  lock.release()
  with pytest.raises(object_lock.LockLost, match="does not hold the lock"):
    lock.renew()
