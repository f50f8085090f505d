"""What a grain worker process of a streaming pipeline runs when it starts."""

from __future__ import annotations

import os
import threading
import time

from data import shared_batches


def init(parent: int, tag: str | None, worker_index: int = 0, worker_count: int = 0) -> None:
  """grain's worker init, bound to the starting process's id `parent` and the iterator's
  `data.shared_batches` tag (None: grain's own shared memory)."""
  del worker_index, worker_count
  exit_with_parent(parent)
  if tag is not None:
    shared_batches.init_worker(tag)


def exit_with_parent(parent: int) -> None:
  """A daemon thread ends this worker within a second of the death of process `parent` (the
  worker's parent id is no longer `parent`, also when it died while the worker was still
  starting), so a trainer killed with SIGKILL leaves no input worker behind holding hundreds of
  MB, nor its batch segments in /dev/shm. A watched parent rather than PR_SET_PDEATHSIG, which
  fires when the *thread* that started the worker ends, not its process."""

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(0.5)
    shared_batches.unlink_pool()
    os._exit(0)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
