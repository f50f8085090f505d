import glob
import os

import pytest

from benchmarks import batch_memory
from data import shared_batches


@pytest.mark.skipif(not shared_batches.available(), reason="no /dev/shm")
def test_each_way_is_timed_and_the_recycled_segments_are_swept():
  got = batch_memory.measure(batches=2, batch=4, size=32)
  assert len(got) == 6 and all(ms > 0 for ms in got.values())
  assert shared_batches._tag is None  # this process is not left a pooling worker
  assert not glob.glob(f"/dev/shm/{shared_batches.PREFIX}{os.getpid()}-*")
