"""Signals from the first instant of a command, before the training loop's `train.preemption`
takes over: SIGTERM and SIGINT are recorded and honoured at the next phase boundary (building,
compiling, restoring: there is nothing to save yet, so the run stops with one line and exit
status 0, and the same command starts it again); SIGUSR1 dumps every thread's stack.

Standard library only, so that `python -m train` installs it before its heavy imports.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """A signal arrived before there was a state to save: one line, exit status 0."""
  exit_status = 0


_state: dict[str, Any] = {"signal": None, "previous": {}, "stacks": ""}


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def _handle(signum: int, frame: Any) -> None:
  del frame
  if _state["signal"] is not None:  # the second one: out now
    signal.signal(signum, _state["previous"].get(signum, signal.SIG_DFL))
    os.kill(os.getpid(), signum)
    return
  _state["signal"] = signum
  _say(f"received {signal.Signals(signum).name}: stopping at the next phase boundary (send it "
       "again to stop at once)")


def install_early() -> None:
  """Handles SIGTERM and SIGINT from now on (`check` stops at the next phase boundary;
  `train.preemption.Preemption` takes a recorded signal over and saves at the first step
  boundary), and SIGUSR1 (`dump_stacks`). A second signal acts as if no handler were installed.
  Main thread only."""
  if threading.current_thread() is not threading.main_thread():
    return
  for sig in SIGNALS:
    _state["previous"][sig] = signal.signal(sig, _handle)
  signal.signal(signal.SIGUSR1, dump_stacks)


# Tests only: STRATA_TEST_PAUSE_AT=PHASE makes `check(PHASE)` say "paused before PHASE" and wait
# (up to 120 s) for a signal, so that a test can signal a run in a known phase.
PAUSE_AT = "STRATA_TEST_PAUSE_AT"


def check(phase: str) -> None:
  """Raises Stopped when a signal arrived before `phase` (`install_early`)."""
  if os.environ.get(PAUSE_AT) == phase:
    _say(f"paused before {phase}")
    deadline = time.monotonic() + 120
    while _state["signal"] is None and time.monotonic() < deadline:
      time.sleep(0.05)
  if _state["signal"] is not None:
    name = signal.Signals(_state["signal"]).name
    raise Stopped(f"stopped by {name} before {phase}: nothing to save yet; the same command "
                  "starts the run again")


def take_early() -> int | None:
  """The signal `install_early` recorded (then forgotten), for `Preemption` to honour."""
  signum, _state["signal"] = _state["signal"], None
  return signum


def stacks_into(directory: str) -> None:
  """Where SIGUSR1's stack dumps are written from now on (the run's workdir)."""
  _state["stacks"] = directory


def dump_stacks(signum: int = signal.SIGUSR1, frame: Any = None) -> str | None:
  """Every thread's Python stack to stderr and, once `stacks_into` named a workdir, appended to
  `WORKDIR/stacks-<host>-<pid>.txt` (returned): `kill -USR1 PID` on a run that seems stuck.
  Python runs the handler between bytecodes, so while the main thread is inside XLA (compiling)
  the dump waits for it to return."""
  del signum, frame
  faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
  if not _state["stacks"]:
    return None
  path = os.path.join(_state["stacks"], f"stacks-{socket.gethostname()}-{os.getpid()}.txt")
  with open(path, "a") as f:
    f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    faulthandler.dump_traceback(file=f, all_threads=True)
  _say(f"SIGUSR1: every thread's stack written to {path}")
  return path
