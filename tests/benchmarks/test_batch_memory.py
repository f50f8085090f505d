import glob
import os

import pytest

from benchmarks import batch_memory
from data import shared_batches


@pytest.mark.skipif(not shared_batches.available(), reason="no /dev/shm")
def test_each_way_is_timed_and_the_recycled_segments_are_swept():
  got = batch_memory.measure(batches=2, batch=4, size=300)  # uint8: 1.08 MB, pooled
  assert len(got) == 6 and all(ms > 0 for ms in got.values())
  assert shared_batches._tag is None  # this process is not left a pooling worker
  assert not glob.glob(f"/dev/shm/{shared_batches.PREFIX}{os.getpid()}-*")


def test_a_batch_too_small_to_pool_is_one_line(capsys):
  with pytest.raises(SystemExit) as exit_:
    batch_memory.main(["--batch", "4", "--size", "32"])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--batch=4 --size=32" in err and "1,048,576" in err
