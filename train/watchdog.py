"""One line instead of a silent hang: a phase that has not finished after its timeout ends the
process with a line naming the process and the phase, every thread's stack in a file, and exit
status 1, so that a scheduler sees a failure instead of a job that never ends.

Two phases have one: joining a multi-process job (`python -m train --distributed_timeout`;
JAX's own timeout aborts the process with a C++ stack trace, so this one fires first) and the
first training step (`train.first_step_timeout_secs`: a collective that waits for a process that
never comes). Standard library only.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
import time
from types import TracebackType

EXIT_HUNG = 1  # train.errors.EXIT_FAILED: a failure said in one line


def who() -> str:
  """This process, as a line names it: host and pid (and the JAX process index when known)."""
  return f"host {socket.gethostname()}, pid {os.getpid()}"


class Watchdog:
  """`with Watchdog(seconds, what, stacks_dir):` ends the process (one line on stderr, stacks in
  `stacks_dir/stacks-<host>-<pid>.txt` when given, exit status 1) if the block runs longer
  than `seconds`; 0 or less: no timeout."""

  def __init__(self, seconds: float, what: str, stacks_dir: str | None = None):
    self.seconds, self.what, self.stacks_dir = seconds, what, stacks_dir
    self._timer: threading.Timer | None = None

  def _fire(self) -> None:
    where = ""
    if self.stacks_dir and os.path.isdir(self.stacks_dir):
      path = os.path.join(self.stacks_dir, f"stacks-{socket.gethostname()}-{os.getpid()}.txt")
      with open(path, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {self.what}: timed out\n")
        f.flush()
        faulthandler.dump_traceback(file=f, all_threads=True)
      where = f"; every thread's stack is in {path}"
    print(f"error: {self.what} did not finish within {self.seconds:g} s ({who()}){where}",
          file=sys.stderr, flush=True)
    os._exit(EXIT_HUNG)  # the main thread is stuck in native code: nothing else would end it

  def __enter__(self) -> "Watchdog":
    if self.seconds > 0:
      self._timer = threading.Timer(self.seconds, self._fire)
      self._timer.daemon = True
      self._timer.start()
    return self

  def cancel(self) -> None:
    if self._timer is not None:
      self._timer.cancel()
      self._timer = None

  def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
               trace: TracebackType | None) -> None:
    self.cancel()
