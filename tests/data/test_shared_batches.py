"""Recycled shared-memory batch buffers (`data.shared_batches`): the worker's and the main
process's sides in one process, then through grain's worker processes."""

import gc
import glob
import itertools
import mmap
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import data as data_lib
from data import shared_batches
from tests.conftest import data_config

pytestmark = pytest.mark.skipif(not shared_batches.available(), reason="no /dev/shm")


@pytest.fixture
def worker():
  """This process as a pooling worker (tag unique to the test); reset and swept after."""
  with shared_batches.both_sides_here() as opener:
    yield opener
  assert shared_batches._tag is None and not shared_batches._pool
  assert not glob.glob(f"/dev/shm/{shared_batches.PREFIX}{opener.tag}-*")


def _batch(seed, shape=(8, 128, 128, 3)):  # 1.5 MB: over MIN_BYTES
  rng = np.random.default_rng(seed)
  return {"inputs": rng.standard_normal(shape).astype(np.float32),
          "label": np.arange(shape[0], dtype=np.int32)}


def test_a_freed_batch_s_segment_is_reused_and_a_held_one_never_is(worker):
  sent = shared_batches.send(_batch(0))
  assert isinstance(sent["inputs"], shared_batches.Token)
  assert isinstance(sent["label"], np.ndarray)  # small arrays stay with grain
  view = worker.open(sent)["inputs"][3:5]  # a view alone holds its batch's segment
  held = worker.open(shared_batches.send(_batch(1)))["inputs"]
  alias = jnp.asarray(held)  # on CPU jax may alias the buffer instead of copying it
  del held
  for seed in range(2, 7):  # each batch freed before the next is made
    got = worker.open(shared_batches.send(_batch(seed)))
    np.testing.assert_array_equal(got["inputs"], _batch(seed)["inputs"])
    del got
    gc.collect()
  # The view's segment stayed busy, the alias's too if jax aliased it; one more served the
  # five others in turn.
  assert len(shared_batches._pool) in (2, 3) and len(worker._maps) == len(shared_batches._pool)
  np.testing.assert_array_equal(view, _batch(0)["inputs"][3:5])
  np.testing.assert_array_equal(np.asarray(alias), _batch(1)["inputs"])
  del view, alias
  gc.collect()
  assert all(s.mm[0] == shared_batches._Segment.FREE for s in shared_batches._pool)


def test_a_buffer_from_take_is_sent_without_a_copy_and_an_unsent_one_is_freed(worker):
  x = shared_batches.take((8, 128, 128, 3), np.float32)
  x[...] = _batch(7)["inputs"]
  token = shared_batches.send({"inputs": x})["inputs"]
  assert token.name == shared_batches._pool[0].name and len(shared_batches._pool) == 1
  # A taken buffer that a later transform replaced is free again once the batch is sent.
  shared_batches.take((32, 128, 128, 3), np.uint8)
  shared_batches.send(_batch(8))
  states = sorted(s.mm[0] for s in shared_batches._pool)
  assert states == [shared_batches._Segment.FREE, shared_batches._Segment.SENT,
                    shared_batches._Segment.SENT]
  np.testing.assert_array_equal(worker.array(token), _batch(7)["inputs"])
  # Under MIN_BYTES nothing is pooled: grain's queue pickles those on its thread, after the
  # worker may have reused a segment for the next batch.
  assert shared_batches.take((8, 4), np.int32) is None
  assert shared_batches.grain_array((8, 4), np.int32) is None


def test_a_full_pool_leaves_batches_to_grain(worker, monkeypatch):
  monkeypatch.setattr(shared_batches, "MAX_SEGMENTS", 2)
  sent = [shared_batches.send(_batch(i)) for i in range(3)]  # none freed
  assert [isinstance(s["inputs"], shared_batches.Token) for s in sent] == [True, True, False]


def test_an_array_past_a_full_pool_goes_to_grain_under_a_pool_name_unlinked_on_receipt(
    worker, monkeypatch):
  from grain._src.python.ipc import shared_memory_array as grain_shm

  monkeypatch.setattr(shared_batches, "MAX_SEGMENTS", 0)
  x = shared_batches.grain_array((8, 128, 128, 3), np.float32)
  path = f"/dev/shm/{x.shm.name}"
  assert x.shm.name.startswith(f"{shared_batches.PREFIX}{worker.tag}-") and os.path.exists(path)
  x[...] = _batch(3)["inputs"]
  sent = shared_batches.send({"inputs": x})
  assert sent["inputs"] is x  # left to grain, without a copy
  got = worker.open(grain_shm.open_from_shm(grain_shm.copy_to_shm(sent)))  # grain's queue
  assert not os.path.exists(path)  # unlinked on receipt, the mapping kept
  np.testing.assert_array_equal(got["inputs"], _batch(3)["inputs"])
  del got, x, sent
  gc.collect()


@pytest.mark.parametrize("pooling", [True, False])
def test_a_grain_array_that_a_transform_replaced_is_unlinked_when_the_batch_is_sent(
    pooling, monkeypatch):
  monkeypatch.setattr(shared_batches, "MAX_SEGMENTS", 0)
  with shared_batches.both_sides_here():
    if not pooling:  # a worker that does not pool (no /dev/shm): grain's own names
      monkeypatch.setattr(shared_batches, "_tag", None)
    x = shared_batches.grain_array((8, 128, 128, 3), np.float32)
    path = f"/dev/shm/{x.shm.name}"
    assert os.path.exists(path) and x.shm.name.startswith(shared_batches.PREFIX) == pooling
    shared_batches.send(_batch(4))  # the batch went out without x (as a float cast makes)
    assert not os.path.exists(path) and not shared_batches._unsent


def test_a_worker_whose_trainer_died_unlinks_the_segments_never_received(worker):
  received = worker.open(shared_batches.send(_batch(0)))  # unlinked by the main process
  shared_batches.send(_batch(1))  # never received
  named = glob.glob(f"/dev/shm/{shared_batches.PREFIX}{worker.tag}-*")
  assert len(named) == 1
  shared_batches.unlink_pool()
  assert not glob.glob(f"/dev/shm/{shared_batches.PREFIX}{worker.tag}-*")
  np.testing.assert_array_equal(received["inputs"], _batch(0)["inputs"])  # mappings stay


def test_a_name_already_taken_leaves_the_batch_to_grain(worker):
  taken = f"/dev/shm/{shared_batches.PREFIX}{shared_batches._tag}-{next(shared_batches._names)}"
  open(taken, "w").close()
  shared_batches._names = iter(range(int(taken.rsplit("-", 1)[1]), 10**6))  # the next name
  try:
    assert isinstance(shared_batches.send(_batch(0))["inputs"], np.ndarray)
    assert isinstance(shared_batches.send(_batch(0))["inputs"], shared_batches.Token)
  finally:
    os.unlink(taken)
    shared_batches._names = itertools.count()


def test_outside_a_worker_nothing_changes():
  assert shared_batches._tag is None
  assert shared_batches.take((4, 4), np.float32) is None
  b = _batch(0)
  assert shared_batches.send(b) is b


def streaming_pipeline(data_dir):
  """Batches of 64 crops of 40 px in float32 (1.2 MB, over MIN_BYTES) from 2 worker processes."""
  c = data_config("shapes", str(data_dir), batch_size=64, in_memory="false", workers=2,
                  builder_config={"num_examples": 64, "num_classes": 4, "image_size": 32},
                  image={"train": ("decode", "random_resized_crop", "flip", "normalize"),
                         "size": 40})
  return data_lib.build_pipeline(c, "train", train=True, seed=0)


def test_worker_processes_recycle_segments_and_give_the_same_batches(tmp_path):
  p = streaming_pipeline(tmp_path)
  it = p.iterator(prefetch=2)
  assert isinstance(it, shared_batches.OpenBatches)
  try:
    first = next(it)  # held to the end: its segment must not be reused
    for i in range(1, 48):
      got = next(it)
      assert isinstance(got["inputs"].base, mmap.mmap)  # a pooled segment, not grain's own
      want = p.dataset[i]
      for k in want:
        np.testing.assert_array_equal(got[k], want[k])
      del got
      if i == 2:
        state = it.get_state()
    # 48 batches through at most half as many segments (grain keeps a few batches a worker in
    # flight; without reuse each worker would fill its 16 and hand the rest to grain).
    assert it.segments <= 24
    np.testing.assert_array_equal(first["inputs"], p.dataset[0]["inputs"])
    it.set_state(state)  # mid-stream: the batches in flight are dropped, not handed out
    for i in range(3, 6):
      np.testing.assert_array_equal(next(it)["inputs"], p.dataset[i]["inputs"])
  finally:
    it.close()
  assert not glob.glob(f"/dev/shm/{shared_batches.PREFIX}{os.getpid()}-*")


_RUN = """
import sys
from data import shared_batches
from tests.data.test_shared_batches import streaming_pipeline
if __name__ == "__main__":
  if sys.argv[2] == "grain":
    shared_batches.available = lambda: False  # as where there is no /dev/shm
  it = streaming_pipeline(sys.argv[1]).iterator(prefetch=2)
  held = [next(it) for _ in range(3)]  # still held at exit, as a trainer's last batch is
  it.close()
"""


@pytest.mark.parametrize("mode", ["pooled", "grain"])
def test_a_streaming_run_ends_without_python_s_leaked_shared_memory_warning(tmp_path, mode):
  # grain sent every array through its shared memory and unlinked a received one only when it
  # was freed, on a thread; those held at exit, or replaced in the worker by a later transform,
  # were never unlinked, and Python's resource tracker warned after the run's last line
  script = tmp_path / "run.py"
  script.write_text(_RUN)
  done = subprocess.run([sys.executable, str(script), str(tmp_path), mode], capture_output=True,
                        text=True, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()},
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr


_KILLED = """
import sys
from tests.data.test_shared_batches import streaming_pipeline
if __name__ == "__main__":
  it = streaming_pipeline(sys.argv[1]).iterator(prefetch=2)
  for _ in range(3):
    next(it)
  print("ready", flush=True)
  sys.stdin.read()
"""


@pytest.mark.slow  # a trainer-like process with two workers, killed: 10 s
def test_a_sigkilled_trainer_leaves_no_segment_behind(tmp_path):
  script = tmp_path / "killed.py"
  script.write_text(_KILLED)
  proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
  assert proc.stdout.readline().strip() == "ready"
  pattern = f"/dev/shm/{shared_batches.PREFIX}{proc.pid}-*"
  assert glob.glob(pattern)  # the workers have batches queued, never received
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.monotonic() + 10
  while glob.glob(pattern) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not glob.glob(pattern)
